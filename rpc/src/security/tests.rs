//! The two layers over real loopback sockets: what passes, and each refusal with its own failure.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::certgen::{CertificateAuthority, Validity};
use super::*;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A node's TLS context from a CA, with a certificate of the given validity.
fn node(ca: &CertificateAuthority, validity: Validity) -> Arc<TlsContext> {
    let issued = ca.issue("node", &[], validity).expect("issue");
    TlsContext::from_pem(
        issued.cert_pem.as_bytes(),
        issued.key_pem.expose().as_bytes(),
        ca.cert_pem().as_bytes(),
    )
    .expect("context")
}

fn ca(name: &str) -> CertificateAuthority {
    CertificateAuthority::generate(name, Validity::days(1)).expect("ca")
}

fn secret(text: &str) -> ClusterSecret {
    ClusterSecret::new(text).expect("long enough")
}

/// Dials `dialer` into `acceptor` over loopback; both results, and if both passed, checks
/// that bytes flow both ways through the secured streams.
async fn pair(
    dialer: &TransportSecurity,
    acceptor: &TransportSecurity,
    channel: Channel,
) -> (
    Result<SecureStream, SecurityError>,
    Result<SecureStream, SecurityError>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let accepted = async {
        let (tcp, peer) = listener.accept().await.expect("accept");
        acceptor.accept(tcp, &peer.to_string(), channel).await
    };
    let dialed = async {
        let tcp = TcpStream::connect(&addr).await.expect("connect");
        dialer.connect(tcp, &addr, channel).await
    };
    let (d, a) = tokio::join!(dialed, accepted);
    match (d, a) {
        (Ok(mut d), Ok(mut a)) => {
            d.write_all(b"ping").await.expect("write");
            d.flush().await.expect("flush");
            let mut buf = [0u8; 4];
            a.read_exact(&mut buf).await.expect("read");
            assert_eq!(&buf, b"ping");
            a.write_all(b"pong").await.expect("write");
            a.flush().await.expect("flush");
            d.read_exact(&mut buf).await.expect("read");
            assert_eq!(&buf, b"pong");
            (Ok(d), Ok(a))
        }
        other => other,
    }
}

fn failure(result: &Result<SecureStream, SecurityError>) -> Option<SecurityFailure> {
    match result {
        Ok(_) => None,
        Err(err) => err.failure().cloned(),
    }
}

#[test]
fn plaintext_secret_tls_and_both_connect() {
    let ca = ca("cluster");
    let tls = node(&ca, Validity::days(1));
    let s = secret("a-cluster-secret-of-some-length");
    rt().block_on(async {
        for security in [
            TransportSecurity::plaintext(),
            TransportSecurity::new(Some(s.clone()), None),
            TransportSecurity::new(None, Some(tls.clone())),
            TransportSecurity::new(Some(s.clone()), Some(tls.clone())),
        ] {
            let (d, a) = pair(&security, &security, Channel::Rpc).await;
            let (d, a) = (d.expect("dialer"), a.expect("acceptor"));
            assert_eq!(d.is_tls(), security.has_tls());
            assert_eq!(a.is_tls(), security.has_tls());
        }
    });
}

#[test]
fn split_tls_streams_carry_data_both_ways_concurrently() {
    let ca = ca("cluster");
    let tls = node(&ca, Validity::days(1));
    let security = TransportSecurity::new(None, Some(tls));
    rt().block_on(async {
        let (d, a) = pair(&security, &security, Channel::Data).await;
        let (mut drd, mut dwr) = d.expect("dialer").into_split();
        let (mut ard, mut awr) = a.expect("acceptor").into_split();
        let payload: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        let expected = payload.clone();
        let send_d = async {
            dwr.write_all(&payload).await.expect("write");
            dwr.flush().await.expect("flush");
        };
        let send_a = async {
            awr.write_all(&payload).await.expect("write");
            awr.flush().await.expect("flush");
        };
        let recv_a = async {
            let mut got = vec![0u8; expected.len()];
            ard.read_exact(&mut got).await.expect("read");
            got
        };
        let recv_d = async {
            let mut got = vec![0u8; expected.len()];
            drd.read_exact(&mut got).await.expect("read");
            got
        };
        let ((), (), a_got, d_got) = tokio::join!(send_d, send_a, recv_a, recv_d);
        assert!(a_got == expected && d_got == expected);
    });
}

#[test]
fn a_certificate_of_another_ca_is_refused() {
    let cluster = ca("cluster");
    let other = ca("intruder");
    let good = TransportSecurity::new(None, Some(node(&cluster, Validity::days(1))));
    // The intruder trusts its own CA only.
    let intruder = TransportSecurity::new(None, Some(node(&other, Validity::days(1))));
    rt().block_on(async {
        let (d, a) = pair(&intruder, &good, Channel::Rpc).await;
        // Each side refuses the other's certificate; the dialer checks first.
        assert_eq!(failure(&d), Some(SecurityFailure::UntrustedCertificate));
        assert!(a.is_err());

        // An intruder who trusts the cluster CA but holds a certificate of its own CA.
        let issued = other.issue("node", &[], Validity::days(1)).expect("issue");
        let sneaky = TlsContext::from_pem(
            issued.cert_pem.as_bytes(),
            issued.key_pem.expose().as_bytes(),
            cluster.cert_pem().as_bytes(),
        )
        .expect("context");
        let sneaky = TransportSecurity::new(None, Some(sneaky));
        let (d, a) = pair(&sneaky, &good, Channel::Rpc).await;
        assert_eq!(failure(&a), Some(SecurityFailure::UntrustedCertificate));
        assert!(
            matches!(
                failure(&d),
                Some(SecurityFailure::CertificateRefusedByPeer(_))
            ),
            "{d:?}"
        );
    });
}

#[test]
fn an_expired_certificate_is_refused() {
    let cluster = ca("cluster");
    let good = TransportSecurity::new(None, Some(node(&cluster, Validity::days(1))));
    let expired = TransportSecurity::new(
        None,
        Some(node(
            &cluster,
            Validity::expired(Duration::from_secs(86_400)),
        )),
    );
    rt().block_on(async {
        let (d, a) = pair(&expired, &good, Channel::Blob).await;
        assert_eq!(failure(&a), Some(SecurityFailure::CertificateExpired));
        assert_eq!(
            failure(&d),
            Some(SecurityFailure::CertificateRefusedByPeer(
                "our certificate has expired".into()
            ))
        );
        // And the other way round: a dialer refuses an acceptor with an expired certificate.
        let (d, a) = pair(&good, &expired, Channel::Blob).await;
        assert_eq!(failure(&d), Some(SecurityFailure::CertificateExpired));
        assert!(a.is_err());
    });
}

#[test]
fn plaintext_and_tls_do_not_mix() {
    let cluster = ca("cluster");
    let tls = TransportSecurity::new(None, Some(node(&cluster, Validity::days(1))));
    rt().block_on(async {
        // A plaintext client to a TLS port: the acceptor sees no TLS.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = async {
            let (tcp, peer) = listener.accept().await.expect("accept");
            tls.accept(tcp, &peer.to_string(), Channel::Rpc).await
        };
        let client = async {
            let mut tcp = TcpStream::connect(addr).await.expect("connect");
            tcp.write_all(b"RFLINK\x00\x01 plaintext rpc preamble and more bytes of a hello")
                .await
                .expect("write");
            let mut rest = Vec::new();
            let _ = tcp.read_to_end(&mut rest).await;
        };
        let (a, ()) = tokio::join!(accepted, client);
        assert_eq!(failure(&a), Some(SecurityFailure::NotTls));

        // A TLS client to a plaintext rpc port, which reads the ClientHello as a bad preamble
        // and hangs up.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let plaintext_server = async {
            let (mut tcp, _) = listener.accept().await.expect("accept");
            let mut preamble = [0u8; 8];
            let _ = tcp.read_exact(&mut preamble).await;
            drop(tcp);
        };
        let dialed = async {
            let tcp = TcpStream::connect(&addr).await.expect("connect");
            tls.connect(tcp, &addr, Channel::Rpc).await
        };
        let ((), d) = tokio::join!(plaintext_server, dialed);
        assert_eq!(failure(&d), Some(SecurityFailure::NotTls));
    });
}

/// Both nodes hold the secret, only one has TLS on: each side names the TLS mismatch rather
/// than blaming the secret.
#[test]
fn secret_only_and_tls_with_secret_name_the_tls_mismatch() {
    let cluster = ca("cluster");
    let s = secret("a-cluster-secret-of-some-length");
    let secret_only = TransportSecurity::new(Some(s.clone()), None);
    let both = TransportSecurity::new(Some(s), Some(node(&cluster, Validity::days(1))));
    rt().block_on(async {
        let (d, a) = pair(&secret_only, &both, Channel::Rpc).await;
        assert_eq!(failure(&d), Some(SecurityFailure::NotTls));
        assert_eq!(failure(&a), Some(SecurityFailure::NotTls));
        let (d, a) = pair(&both, &secret_only, Channel::Rpc).await;
        assert_eq!(failure(&d), Some(SecurityFailure::NotTls));
        assert_eq!(failure(&a), Some(SecurityFailure::NotTls));
    });
}

#[test]
fn tls_records_are_recognised() {
    // A TLS 1.3 ClientHello and a decode_error alert, as rustls sends them.
    assert!(looks_like_tls_record(&[0x16, 0x03, 0x01, 0x00, 0xcd, 0x01]));
    assert!(looks_like_tls_record(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02]));
    assert!(!looks_like_tls_record(handshake::MAGIC));
    assert!(!looks_like_tls_record(b"RFLK\x00\x01"));
    assert!(!looks_like_tls_record(&[0x16]));
    assert!(!looks_like_tls_record(&[]));
}

#[test]
fn a_wrong_secret_is_refused_with_and_without_tls() {
    let cluster = ca("cluster");
    let tls = node(&cluster, Validity::days(1));
    let one = secret("the-first-cluster-secret");
    let two = secret("the-other-cluster-secret");
    rt().block_on(async {
        for tls in [None, Some(tls.clone())] {
            let a_side = TransportSecurity::new(Some(one.clone()), tls.clone());
            let d_side = TransportSecurity::new(Some(two.clone()), tls.clone());
            let (d, a) = pair(&d_side, &a_side, Channel::Rpc).await;
            assert_eq!(failure(&d), Some(SecurityFailure::WrongSecret));
            assert_eq!(failure(&a), Some(SecurityFailure::RefusedByPeer));
            // No secret on the dialer: the acceptor sees no handshake.
            let none = TransportSecurity::new(None, tls.clone());
            let (_, a) = pair(&none, &a_side, Channel::Rpc).await;
            assert!(a.is_err());
        }
    });
}

#[test]
fn a_silent_peer_is_cut_off_by_the_timeout() {
    let security = TransportSecurity::new(Some(secret("a-cluster-secret-of-some-length")), None)
        .with_timeout(Duration::from_millis(200));
    rt().block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let _silent = TcpStream::connect(addr).await.expect("connect");
        let (tcp, peer) = listener.accept().await.expect("accept");
        let result = security.accept(tcp, &peer.to_string(), Channel::Data).await;
        assert_eq!(
            failure(&result),
            Some(SecurityFailure::Timeout(Duration::from_millis(200)))
        );
    });
}

#[test]
fn loading_checks_the_node_s_own_certificate() {
    let dir = std::env::temp_dir().join(format!("rflink-tls-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let cluster = ca("cluster");
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    let good = cluster
        .issue("node", &[], Validity::days(1))
        .expect("issue");
    let expired = cluster
        .issue("node", &[], Validity::expired(Duration::from_secs(3600)))
        .expect("issue");
    let foreign = ca("other")
        .issue("node", &[], Validity::days(1))
        .expect("issue");
    let files = TlsFiles {
        cert: write("node.pem", &good.cert_pem),
        key: write("node.key", good.key_pem.expose()),
        truststore: write("ca.pem", &cluster.cert_pem()),
    };
    assert!(TlsContext::load(&files).is_ok());

    write("node.pem", &expired.cert_pem);
    write("node.key", expired.key_pem.expose());
    let err = TlsContext::load(&files).expect_err("expired");
    assert!(err.to_string().contains("expired"), "{err}");

    write("node.pem", &foreign.cert_pem);
    write("node.key", foreign.key_pem.expose());
    let err = TlsContext::load(&files).expect_err("foreign");
    assert!(err.to_string().contains("not signed by a CA"), "{err}");

    write("node.pem", "not a certificate");
    let err = TlsContext::load(&files).expect_err("garbage");
    assert!(err.to_string().contains("node.pem"), "{err}");

    let missing = TlsFiles {
        cert: dir.join("missing.pem"),
        ..files
    };
    let err = TlsContext::load(&missing).expect_err("missing");
    assert!(err.to_string().contains("missing.pem"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cluster_material_is_written_with_private_modes() {
    let dir = std::env::temp_dir().join(format!("rflink-material-{}", std::process::id()));
    let material =
        certgen::ClusterMaterial::generate(&["jobmanager".into()], Validity::days(1)).expect("gen");
    let written = material.write_to(&dir, false).expect("write");
    assert_eq!(written.len(), certgen::FILES.len());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |name: &str| {
            std::fs::metadata(dir.join(name))
                .expect("meta")
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("node.key"), 0o600);
        assert_eq!(mode("cluster-secret"), 0o600);
        assert_eq!(mode("ca.pem"), 0o644);
    }
    let files = TlsFiles {
        cert: dir.join("node.pem"),
        key: dir.join("node.key"),
        truststore: dir.join("ca.pem"),
    };
    assert!(TlsContext::load(&files).is_ok());
    let rest = TlsFiles {
        cert: dir.join("rest.pem"),
        key: dir.join("rest.key"),
        truststore: dir.join("ca.pem"),
    };
    assert!(TlsContext::load(&rest).is_ok());
    assert!(ClusterSecret::from_file(&dir.join("cluster-secret")).is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}
