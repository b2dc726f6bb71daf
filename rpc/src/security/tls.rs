//! Mutual TLS for the cluster's own connections (Flink's `security.ssl.internal.*`), on rustls
//! with the `ring` provider, TLS 1.3 only.
//!
//! * Every node holds a certificate and key (PEM) issued by the cluster's CA, and trusts that CA
//!   (the trust store, PEM). Both ends of every connection present their certificate and check
//!   the other's: chain to a trusted CA, validity dates, key usage. A certificate of another CA,
//!   an expired one, or none at all is refused during the TLS handshake.
//! * Host names are **not** checked, as Flink does not for internal connectivity: nodes come
//!   and go under addresses nobody can list in advance (scaled containers), and membership of
//!   the cluster's CA is the identity. A certificate that chains to the CA is a cluster member.
//! * [`TlsContext::load`] checks the node's own certificate against its own trust store when it
//!   starts, so an expired or foreign certificate fails the node at once, with the file named.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig};

use super::{SecurityError, SecurityFailure};

/// Where a node's PEM files are (`security.ssl.internal.cert`, `.key`, `.truststore`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The node's certificate chain, leaf first.
    pub cert: PathBuf,
    /// The node's private key (PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
    /// The CA certificates this node trusts.
    pub truststore: PathBuf,
}

/// A node's TLS settings for both directions: what it presents and what it trusts.
pub struct TlsContext {
    pub(crate) server: Arc<ServerConfig>,
    pub(crate) client: Arc<ClientConfig>,
}

impl fmt::Debug for TlsContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsContext { mutual TLS 1.3 }")
    }
}

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn file_error(what: &'static str, path: &Path, reason: impl fmt::Display) -> SecurityError {
    SecurityError::File {
        what,
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, SecurityError> {
    std::fs::read(path).map_err(|err| file_error(what, path, err))
}

/// The certificates of a PEM text, or why there are none.
pub(crate) fn parse_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| format!("not PEM certificates: {err}"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate (\"-----BEGIN CERTIFICATE-----\")".into());
    }
    Ok(certs)
}

/// The private key of a PEM text, or why there is none.
pub(crate) fn parse_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem)
        .map_err(|err| format!("holds no usable PEM private key: {err}"))
}

/// A trust store of the CA certificates in a PEM text.
pub(crate) fn parse_roots(pem: &[u8]) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in parse_certs(pem)? {
        roots
            .add(cert)
            .map_err(|err| format!("holds a certificate that cannot be a trust anchor: {err}"))?;
    }
    Ok(roots)
}

impl TlsContext {
    /// Reads the three PEM files and checks the node's own certificate against its trust store
    /// (chain and validity dates), so a misconfigured node fails when it starts.
    pub fn load(files: &TlsFiles) -> Result<Arc<TlsContext>, SecurityError> {
        let cert = read("TLS certificate", &files.cert)?;
        let key = read("TLS private key", &files.key)?;
        let trust = read("TLS trust store", &files.truststore)?;
        let certs =
            parse_certs(&cert).map_err(|r| file_error("TLS certificate", &files.cert, r))?;
        parse_key(&key).map_err(|r| file_error("TLS private key", &files.key, r))?;
        let roots =
            parse_roots(&trust).map_err(|r| file_error("TLS trust store", &files.truststore, r))?;
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|err| file_error("TLS trust store", &files.truststore, err))?;
        if let Err(err) = verifier.verify_client_cert(&certs[0], &certs[1..], UnixTime::now()) {
            return Err(file_error(
                "TLS certificate",
                &files.cert,
                format!(
                    "is not accepted by this node's own trust store {}: {}",
                    files.truststore.display(),
                    classify(&err)
                ),
            ));
        }
        Self::from_pem(&cert, &key, &trust)
            .map_err(|err| file_error("TLS settings", &files.cert, err))
    }

    /// Builds the context from PEM texts, without checking the node's own certificate (tests
    /// use it to present an expired or foreign one).
    pub fn from_pem(
        cert_pem: &[u8],
        key_pem: &[u8],
        trust_pem: &[u8],
    ) -> Result<Arc<TlsContext>, SecurityError> {
        let bad = |reason: String| SecurityError::TlsConfig(reason);
        let certs = parse_certs(cert_pem).map_err(|r| bad(format!("certificate: {r}")))?;
        let key = parse_key(key_pem).map_err(|r| bad(format!("private key: {r}")))?;
        let roots = Arc::new(parse_roots(trust_pem).map_err(|r| bad(format!("trust store: {r}")))?);

        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
                .build()
                .map_err(|err| bad(format!("trust store: {err}")))?;
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|err| bad(err.to_string()))?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(|err| bad(format!("certificate and key: {err}")))?;
        // Connections are long-lived and never resumed: no tickets to send or store.
        server.send_tls13_tickets = 0;

        let server_verifier = WebPkiServerVerifier::builder_with_provider(roots, provider())
            .build()
            .map_err(|err| bad(format!("trust store: {err}")))?;
        let mut client = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|err| bad(err.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ClusterCaVerifier {
                inner: server_verifier,
            }))
            .with_client_auth_cert(certs, key)
            .map_err(|err| bad(format!("certificate and key: {err}")))?;
        client.resumption = rustls::client::Resumption::disabled();
        Ok(Arc::new(TlsContext {
            server: Arc::new(server),
            client: Arc::new(client),
        }))
    }

    /// The name a dialer presents for `host:port`: the host when it is a valid DNS name or IP
    /// address (it is not checked, see the module documentation), else a placeholder.
    pub(crate) fn server_name(peer: &str) -> ServerName<'static> {
        let host = match peer.rsplit_once(':') {
            Some((host, _)) => host.trim_start_matches('[').trim_end_matches(']'),
            None => peer,
        };
        ServerName::try_from(host.to_string()).unwrap_or_else(|_| {
            ServerName::try_from("rflink-node").unwrap_or(ServerName::IpAddress(
                std::net::IpAddr::from([127, 0, 0, 1]).into(),
            ))
        })
    }
}

/// Checks a server's chain against the cluster CA like a browser would, but does not compare
/// its names with the address dialed (see the module documentation).
#[derive(Debug)]
struct ClusterCaVerifier {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ClusterCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // webpki checks the chain, dates and usage before the name, so a name mismatch means
        // everything else passed.
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A rustls error as the failure a user can act on.
pub(crate) fn classify(err: &rustls::Error) -> SecurityFailure {
    use rustls::AlertDescription as Alert;
    match err {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                SecurityFailure::CertificateExpired
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                SecurityFailure::CertificateNotYetValid
            }
            CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                SecurityFailure::UntrustedCertificate
            }
            other => SecurityFailure::Tls(format!("certificate refused: {other:?}")),
        },
        rustls::Error::NoCertificatesPresented => SecurityFailure::NoCertificate,
        rustls::Error::AlertReceived(alert) => match alert {
            Alert::CertificateExpired => {
                SecurityFailure::CertificateRefusedByPeer("our certificate has expired".into())
            }
            Alert::UnknownCA | Alert::BadCertificate | Alert::DecryptError => {
                SecurityFailure::CertificateRefusedByPeer(
                    "our certificate is not signed by a CA the peer trusts".into(),
                )
            }
            Alert::CertificateRequired => SecurityFailure::CertificateRefusedByPeer(
                "the peer requires a client certificate".into(),
            ),
            other => SecurityFailure::Tls(format!("the peer sent TLS alert {other:?}")),
        },
        rustls::Error::InvalidMessage(_)
        | rustls::Error::InappropriateMessage { .. }
        | rustls::Error::InappropriateHandshakeMessage { .. } => SecurityFailure::NotTls,
        other => SecurityFailure::Tls(other.to_string()),
    }
}

/// An I/O error of a TLS stream as a failure: rustls errors travel inside `io::Error`.
pub(crate) fn classify_io(err: &std::io::Error) -> SecurityFailure {
    if let Some(tls) = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        return classify(tls);
    }
    match err.kind() {
        std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset => {
            SecurityFailure::PeerClosed
        }
        _ => SecurityFailure::Io(err.to_string()),
    }
}

/// The REST server's TLS settings (`security.ssl.rest.cert`, `.key`): TLS 1.2 and 1.3, no
/// client certificates (REST clients authenticate with the bearer token), HTTP/1.1.
pub fn rest_server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, SecurityError> {
    let cert_pem = read("REST TLS certificate", cert)?;
    let key_pem = read("REST TLS private key", key)?;
    let certs = parse_certs(&cert_pem).map_err(|r| file_error("REST TLS certificate", cert, r))?;
    let key_der = parse_key(&key_pem).map_err(|r| file_error("REST TLS private key", key, r))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|err| SecurityError::TlsConfig(err.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|err| file_error("REST TLS certificate and key", cert, err))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A REST client's TLS settings: trusts the CA certificates of `truststore`
/// (`security.ssl.rest.truststore`, the CLI's `--rest-ca`) and checks the server's name as any
/// HTTPS client does.
pub fn rest_client_config(truststore: &Path) -> Result<Arc<ClientConfig>, SecurityError> {
    let pem = read("REST trust store", truststore)?;
    let roots = parse_roots(&pem).map_err(|r| file_error("REST trust store", truststore, r))?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|err| SecurityError::TlsConfig(err.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
