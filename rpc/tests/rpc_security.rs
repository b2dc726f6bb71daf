//! The RPC transport behind TLS and/or the cluster secret: nodes configured alike talk; a peer
//! without the secret, with another one, replaying a recorded handshake, speaking garbage or
//! holding the wrong certificate is refused with a typed error and no state change, and the node
//! goes on serving everyone else.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use rflink_rpc::security::certgen::{CertificateAuthority, Validity};
use rflink_rpc::security::{
    handshake, ClusterSecret, SecurityFailure, TlsContext, TransportSecurity,
};
use rflink_rpc::transport::frame;
use rflink_rpc::{HandshakeFailure, RpcAddress, RpcConfig, RpcError, RpcServer};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const SECRET: &str = "the-cluster-secret-of-the-rpc-tests";
const OTHER_SECRET: &str = "another-cluster-s-secret-entirely";

fn secret(text: &str) -> ClusterSecret {
    ClusterSecret::new(text).expect("long enough")
}

fn ca(name: &str) -> CertificateAuthority {
    CertificateAuthority::generate(name, Validity::days(1)).expect("ca")
}

/// A node's TLS context: a certificate of `issuer` with `validity`, trusting `trusted`'s CA.
fn tls(
    issuer: &CertificateAuthority,
    validity: Validity,
    trusted: &CertificateAuthority,
) -> Arc<TlsContext> {
    let issued = issuer.issue("node", &[], validity).expect("issue");
    TlsContext::from_pem(
        issued.cert_pem.as_bytes(),
        issued.key_pem.expose().as_bytes(),
        trusted.cert_pem().as_bytes(),
    )
    .expect("tls context")
}

fn secured(security: TransportSecurity) -> RpcConfig {
    RpcConfig {
        security,
        ..RpcConfig::default()
    }
}

fn with_secret(text: &str) -> RpcConfig {
    secured(TransportSecurity::new(Some(secret(text)), None))
}

/// A good citizen configured like the cluster still gets served: a fresh service connects and
/// asks.
async fn assert_still_serving(server: &RpcServer<TestEndpoint>, security: &TransportSecurity) {
    let good = service_with(secured(security.clone())).await;
    let gw = bounded(
        "good connect",
        good.connect::<TestEndpoint>(server.address()),
    )
    .await
    .expect("a good peer connects");
    assert_eq!(
        bounded("good ask", gw.ask(Echo("still here".into()))).await,
        Ok("still here".into())
    );
    bounded("close the good peer", good.close())
        .await
        .expect("close");
}

/// The typed failure of a refused connect, or a panic naming what came instead.
fn security_failure<T>(what: &str, result: Result<T, RpcError>, peer: &str) -> SecurityFailure {
    match result {
        Err(RpcError::Security { peer: p, failure }) => {
            assert_eq!(p, peer, "{what}: the error names the peer");
            failure
        }
        Err(other) => panic!("{what}: expected RpcError::Security, got {other:?}"),
        Ok(_) => panic!("{what}: expected RpcError::Security, got a connection"),
    }
}

/// Reads until the node closes the connection (a reset counts as closed); what it sent.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match bounded("the node closes the connection", stream.read(&mut buf)).await {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// What the client of one forwarded connection sent.
type Recording = Arc<Mutex<Vec<u8>>>;

/// A TCP proxy that forwards each connection to its current target and records what clients
/// send. `cut` drops every forwarded connection; `retarget` points new ones elsewhere.
struct Proxy {
    addr: SocketAddr,
    target: Arc<Mutex<SocketAddr>>,
    recorded: Arc<Mutex<Vec<Recording>>>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    listener: JoinHandle<()>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let target = Arc::new(Mutex::new(target));
        let recorded: Arc<Mutex<Vec<Recording>>> = Arc::default();
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let listener = tokio::spawn({
            let (target, recorded, tasks) = (target.clone(), recorded.clone(), tasks.clone());
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let to = *target.lock().expect("target");
                    let Ok(server) = TcpStream::connect(to).await else {
                        continue;
                    };
                    let record: Recording = Arc::default();
                    recorded.lock().expect("recorded").push(record.clone());
                    let (mut client_rd, mut client_wr) = client.into_split();
                    let (mut server_rd, mut server_wr) = server.into_split();
                    let up = tokio::spawn(async move {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = match client_rd.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            record.lock().expect("record").extend_from_slice(&buf[..n]);
                            if server_wr.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                        let _ = server_wr.shutdown().await;
                    });
                    let down = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut server_rd, &mut client_wr).await;
                        let _ = client_wr.shutdown().await;
                    });
                    tasks.lock().expect("tasks").extend([up, down]);
                }
            }
        });
        Proxy {
            addr,
            target,
            recorded,
            tasks,
            listener,
        }
    }

    /// What the client of the `n`th forwarded connection sent so far.
    fn recorded(&self, n: usize) -> Vec<u8> {
        let all = self.recorded.lock().expect("recorded");
        let one = all.get(n).expect("that many connections");
        let bytes = one.lock().expect("record").clone();
        bytes
    }

    fn retarget(&self, to: SocketAddr) {
        *self.target.lock().expect("target") = to;
    }

    /// Drops every forwarded connection, as a network failure would.
    fn cut(&self) {
        for task in self.tasks.lock().expect("tasks").drain(..) {
            task.abort();
        }
    }

    /// `server`'s endpoint, reached through the proxy.
    fn address_of(&self, server: &RpcServer<TestEndpoint>) -> RpcAddress {
        RpcAddress::new("127.0.0.1", self.addr.port(), server.address().endpoint())
            .expect("proxy address")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.listener.abort();
        self.cut();
    }
}

// ---- configured alike: they talk ----

/// Asks, tells and frames larger than a TLS record all arrive, with each kind of security.
async fn round_trip(security: TransportSecurity) {
    let host = service_with(secured(security.clone())).await;
    let caller = service_with(secured(security.clone())).await;
    let (server, probe) = start_test_endpoint(&host);
    let gw = bounded("connect", caller.connect::<TestEndpoint>(server.address()))
        .await
        .expect("configured alike, they connect");
    assert_eq!(
        bounded("echo", gw.ask(Echo("hi".into()))).await,
        Ok("hi".to_string())
    );
    for i in 1..=100 {
        gw.tell(Add(i)).expect("tell queued");
    }
    assert_eq!(bounded("total", gw.ask(Total)).await, Ok(5050));
    assert_eq!(probe.adds.load(Ordering::SeqCst), 100);
    // Several TLS records each way (a record carries at most 16 KiB).
    let big = bounded("a large reply", gw.ask(Blob(1024 * 1024)))
        .await
        .expect("large reply");
    assert_eq!(big.0.len(), 1024 * 1024);
    assert_eq!(
        bounded(
            "a large request",
            gw.ask(Upload(serde_bytes_vec::Bytes(vec![3; 1024 * 1024])))
        )
        .await,
        Ok(1024 * 1024)
    );
    // Frames far larger than a loopback socket's buffer: the writer's last bytes of each sit in
    // the TLS session's buffer when the socket blocks, and only its flush sends them (a writer
    // without the flush would leave the reply's tail behind and the ask would time out).
    for _ in 0..3 {
        let big = bounded("an 8 MiB reply", gw.ask(Blob(8 * 1024 * 1024)))
            .await
            .expect("8 MiB reply");
        assert_eq!(big.0.len(), 8 * 1024 * 1024);
        assert_eq!(
            bounded(
                "an 8 MiB request",
                gw.ask(Upload(serde_bytes_vec::Bytes(vec![5; 8 * 1024 * 1024])))
            )
            .await,
            Ok(8 * 1024 * 1024)
        );
    }
    // Many asks in flight at once over one secured connection.
    let asks = (0..200).map(|i| gw.ask(Echo(format!("{i}"))));
    let answers = bounded("concurrent asks", futures::future::join_all(asks)).await;
    for (i, answer) in answers.into_iter().enumerate() {
        assert_eq!(answer, Ok(format!("{i}")));
    }
    // And the other way: the host calls back, over the connection the caller dialed.
    let (back, _) = start_test_endpoint(&caller);
    let gw_back = bounded("connect back", host.connect::<TestEndpoint>(back.address()))
        .await
        .expect("connects back");
    assert_eq!(bounded("ask back", gw_back.ask(Total)).await, Ok(0));
    for stats in [host.stats(), caller.stats()] {
        assert_eq!(stats.handshake_failures, 0, "{}", security.describe());
    }
    bounded("close caller", caller.close())
        .await
        .expect("closes");
    bounded("close host", host.close()).await.expect("closes");
}

#[actix_rt::test]
async fn services_with_the_same_secret_talk() {
    round_trip(TransportSecurity::new(Some(secret(SECRET)), None)).await;
}

#[actix_rt::test]
async fn services_with_mutual_tls_talk() {
    let cluster = ca("cluster");
    round_trip(TransportSecurity::new(
        None,
        Some(tls(&cluster, Validity::days(1), &cluster)),
    ))
    .await;
}

#[actix_rt::test]
async fn services_with_mutual_tls_and_the_secret_talk() {
    let cluster = ca("cluster");
    round_trip(TransportSecurity::new(
        Some(secret(SECRET)),
        Some(tls(&cluster, Validity::days(1), &cluster)),
    ))
    .await;
}

// ---- the cluster secret ----

/// A node with another secret cannot reach an endpoint, while a node with the right one keeps
/// working against the same server, during the refusals and after; the refused node changed
/// nothing on the server.
#[actix_rt::test]
async fn a_wrong_secret_is_refused_and_the_cluster_goes_on() {
    let host = service_with(with_secret(SECRET)).await;
    let (server, probe) = start_test_endpoint(&host);
    let good = service_with(with_secret(SECRET)).await;
    let intruder = service_with(with_secret(OTHER_SECRET)).await;
    let gw = bounded(
        "good connect",
        good.connect::<TestEndpoint>(server.address()),
    )
    .await
    .expect("the right secret connects");

    const ATTEMPTS: u64 = 5;
    let good_work = async {
        for i in 0..50u64 {
            gw.tell(Add(1)).expect("tell queued");
            assert_eq!(gw.ask(Echo(format!("{i}"))).await, Ok(format!("{i}")));
        }
        gw.ask(Total).await
    };
    let refused = async {
        let mut failures = Vec::new();
        for _ in 0..ATTEMPTS {
            let result = intruder.connect::<TestEndpoint>(server.address()).await;
            failures.push(security_failure("wrong secret", result, host.address()));
        }
        failures
    };
    let (total, failures) =
        bounded("both at once", async { futures::join!(good_work, refused) }).await;
    assert_eq!(total, Ok(50), "the good node was served throughout");
    // The dialer checks the acceptor's proof first, so it learns the secrets differ.
    assert!(
        failures.iter().all(|f| *f == SecurityFailure::WrongSecret),
        "{failures:?}"
    );

    eventually("the host counts every refusal", || {
        host.stats().handshake_failures == ATTEMPTS
    })
    .await;
    let intruder_stats = intruder.stats();
    assert_eq!(intruder_stats.handshake_failures, ATTEMPTS);
    assert_eq!(intruder_stats.connections_established, 0);
    assert_eq!(intruder_stats.open_connections, 0);
    let host_stats = host.stats();
    assert_eq!(
        host_stats.connections_established, 1,
        "only the good node got in"
    );
    assert_eq!(host_stats.protocol_violations, 0);
    assert_eq!(host_stats.unknown_endpoints, 0);

    // Afterwards: a third node with the right secret connects, and the state is the good
    // node's alone.
    let third = service_with(with_secret(SECRET)).await;
    let gw3 = bounded(
        "third connect",
        third.connect::<TestEndpoint>(server.address()),
    )
    .await
    .expect("the third node connects");
    assert_eq!(bounded("third total", gw3.ask(Total)).await, Ok(50));
    assert_eq!(probe.adds.load(Ordering::SeqCst), 50);
    assert_eq!(
        bounded("the first still works", gw.ask(Echo("on".into()))).await,
        Ok("on".into())
    );
}

/// A gateway whose node comes back with another secret (a half-done rotation) fails its next ask
/// with the typed refusal, not a timeout.
#[actix_rt::test]
async fn an_ask_to_a_node_that_changed_its_secret_fails_with_the_reason() {
    let first = service_with(with_secret(SECRET)).await;
    let (on_first, _) = start_test_endpoint(&first);
    let rotated = service_with(with_secret(OTHER_SECRET)).await;
    let (on_rotated, rotated_probe) = start_test_endpoint(&rotated);
    assert_eq!(
        on_first.address().endpoint(),
        on_rotated.address().endpoint()
    );
    let proxy = Proxy::start(first.local_addr()).await;
    let caller = service_with(with_secret(SECRET)).await;
    let address = proxy.address_of(&on_first);
    let gw = bounded("connect", caller.connect::<TestEndpoint>(&address))
        .await
        .expect("connects through the proxy");
    assert_eq!(bounded("ask", gw.ask(Total)).await, Ok(0));

    // The node behind the address is replaced by one with another secret.
    proxy.retarget(rotated.local_addr());
    proxy.cut();
    eventually("the caller notices the loss", || {
        caller.stats().open_connections == 0
    })
    .await;
    let node = address.node();
    let failure = security_failure("ask", bounded("ask", gw.ask(Add(1))).await, &node);
    assert_eq!(failure, SecurityFailure::WrongSecret);
    let err = RpcError::Security {
        peer: node.clone(),
        failure,
    };
    assert!(!err.is_retryable());
    assert!(
        err.to_string()
            .starts_with(&format!("secure connection with {node} refused: ")),
        "{err}"
    );
    eventually("the rotated node counts the refusal", || {
        rotated.stats().handshake_failures == 1
    })
    .await;
    assert_eq!(rotated_probe.adds.load(Ordering::SeqCst), 0);
    assert_eq!(rotated.stats().connections_established, 0);
}

/// A node without a secret and a node with one do not connect, either way round, and each side
/// says why.
#[actix_rt::test]
async fn a_node_without_the_secret_is_refused_either_way() {
    let host = service_with(with_secret(SECRET)).await;
    let (server, probe) = start_test_endpoint(&host);
    let plain = service().await;
    let (plain_server, _) = start_test_endpoint(&plain);

    // Plaintext dialer: the secured node hangs up at its preamble, before reading its Hello.
    match bounded(
        "plain connect",
        plain.connect::<TestEndpoint>(server.address()),
    )
    .await
    {
        Err(RpcError::Connection { reason, .. }) => {
            assert!(reason.contains("security.cluster-secret"), "{reason}")
        }
        other => panic!("expected a connection error with a hint, got {other:?}"),
    }
    eventually("the host counts the refusal", || {
        host.stats().handshake_failures == 1
    })
    .await;
    assert_eq!(host.stats().connections_established, 0);

    // Secured dialer to a plaintext node: that node reads our HELLO as a bad preamble.
    let result = bounded(
        "secured connect to a plain node",
        host.connect::<TestEndpoint>(plain_server.address()),
    )
    .await;
    assert_eq!(
        security_failure("secret to plain", result, plain.address()),
        SecurityFailure::PeerHasNoSecret
    );
    eventually("the plain node counts a bad preamble", || {
        plain.stats().handshake_failures == 1
    })
    .await;
    assert_eq!(probe.adds.load(Ordering::SeqCst), 0);
    assert_still_serving(&server, &host.config().security).await;
}

/// Garbage and a plaintext RPC handshake sent raw to a secret-protected port: the node closes
/// the connection without answering in the RPC protocol, counts it, and serves a good client.
#[actix_rt::test]
async fn raw_garbage_at_a_secret_protected_port_is_refused() {
    let host = service_with(with_secret(SECRET)).await;
    let (server, probe) = start_test_endpoint(&host);
    let hello = frame::Hello {
        cluster_id: "default".into(),
        instance: rflink_rpc::AbstractId::generate(),
        advertised: "127.0.0.1:1".into(),
    };
    let mut plaintext_rpc = frame::preamble().to_vec();
    plaintext_rpc.extend_from_slice(&frame::encode_hello(&hello, 1 << 20).expect("hello"));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("http", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("a plaintext rpc handshake", plaintext_rpc),
        ("a short magic", b"RFLS".to_vec()),
        ("nothing", Vec::new()),
        (
            "a handshake for another version",
            [&handshake::MAGIC[..], &[99, 1], &[0u8; 40][..]].concat(),
        ),
    ];
    for (n, (what, bytes)) in cases.iter().enumerate() {
        let mut raw = TcpStream::connect(host.local_addr())
            .await
            .expect("connect");
        // The node may hang up before taking everything: a failed write is a refusal too.
        let _ = raw.write_all(bytes).await;
        let _ = raw.shutdown().await;
        let answer = read_until_closed(&mut raw).await;
        assert!(
            answer.is_empty(),
            "{what}: the node must say nothing, said {answer:02x?}"
        );
        eventually(&format!("{what}: the refusal is counted"), || {
            host.stats().handshake_failures == n as u64 + 1
        })
        .await;
    }
    let stats = host.stats();
    assert_eq!(stats.connections_established, 0);
    assert_eq!(stats.protocol_violations, 0);
    assert_eq!(probe.adds.load(Ordering::SeqCst), 0);
    assert_still_serving(&server, &host.config().security).await;
}

/// An eavesdropper records every byte a genuine node sends on a successful connection (the
/// secret handshake, the RPC handshake and a tell) and replays them raw: the node's fresh nonce
/// makes the recorded proof worthless, so it refuses before decoding any of the rest.
#[actix_rt::test]
async fn a_replayed_handshake_is_refused_and_nothing_is_decoded() {
    let host = service_with(with_secret(SECRET)).await;
    let (server, probe) = start_test_endpoint(&host);
    let proxy = Proxy::start(host.local_addr()).await;
    let genuine = service_with(with_secret(SECRET)).await;
    let gw = bounded(
        "connect through the recorder",
        genuine.connect::<TestEndpoint>(&proxy.address_of(&server)),
    )
    .await
    .expect("the genuine node connects");
    gw.tell(Add(7)).expect("tell");
    // The reply comes after the server read the tell, so the recording holds it too.
    assert_eq!(bounded("total", gw.ask(Total)).await, Ok(7));
    let transcript = proxy.recorded(0);
    assert!(transcript.starts_with(handshake::MAGIC));
    let rpc_start = handshake::HELLO_LEN + handshake::PROOF_LEN;
    assert_eq!(
        &transcript[rpc_start..rpc_start + frame::PREAMBLE_LEN],
        &frame::preamble()[..],
        "the recording goes on into the rpc protocol"
    );
    let before = host.stats();
    assert_eq!(before.handshake_failures, 0);

    // Replay everything at once, as an attacker without the secret would.
    let mut replay = TcpStream::connect(host.local_addr())
        .await
        .expect("connect");
    let _ = replay.write_all(&transcript).await;
    let answer = read_until_closed(&mut replay).await;
    // The node answers HELLO with a fresh CHALLENGE, then refuses the stale PROOF: a verdict
    // of 1, or nothing if the close overtook it. Never an acceptance, never a preamble.
    assert!(
        answer.len() <= handshake::CHALLENGE_LEN + 1,
        "the node said more than a challenge and a verdict: {answer:02x?}"
    );
    if answer.len() > handshake::MAGIC.len() {
        assert!(answer.starts_with(handshake::MAGIC), "{answer:02x?}");
    }
    if answer.len() == handshake::CHALLENGE_LEN + 1 {
        assert_ne!(answer[handshake::CHALLENGE_LEN], 0, "an accepting verdict");
    }
    eventually("the replay is counted", || {
        host.stats().handshake_failures == 1
    })
    .await;
    let after = host.stats();
    assert_eq!(
        after.connections_established,
        before.connections_established
    );
    assert_eq!(after.protocol_violations, 0);
    assert_eq!(after.unknown_endpoints, 0);
    // The replayed tell was never decoded: the total is the genuine one.
    assert_eq!(probe.adds.load(Ordering::SeqCst), 1);
    assert_eq!(bounded("total after", gw.ask(Total)).await, Ok(7));
    assert_still_serving(&server, &host.config().security).await;
}

// ---- TLS misconfigurations ----

#[actix_rt::test]
async fn plaintext_and_tls_nodes_refuse_each_other_with_the_reason() {
    let cluster = ca("cluster");
    let security = TransportSecurity::new(None, Some(tls(&cluster, Validity::days(1), &cluster)));
    let host = service_with(secured(security.clone())).await;
    let (server, _) = start_test_endpoint(&host);
    let plain = service().await;
    let (plain_server, _) = start_test_endpoint(&plain);

    // A plaintext node dials the TLS node, whose alert it recognises.
    let result = bounded(
        "plain to tls",
        plain.connect::<TestEndpoint>(server.address()),
    )
    .await;
    assert_eq!(
        security_failure("plain to tls", result, host.address()),
        SecurityFailure::NotTls
    );
    eventually("the tls node counts the refusal", || {
        host.stats().handshake_failures == 1
    })
    .await;
    assert_eq!(plain.stats().handshake_failures, 1);

    // The TLS node dials the plaintext node, which hangs up on the ClientHello.
    let result = bounded(
        "tls to plain",
        host.connect::<TestEndpoint>(plain_server.address()),
    )
    .await;
    assert_eq!(
        security_failure("tls to plain", result, plain.address()),
        SecurityFailure::NotTls
    );
    eventually("the plaintext node counts a bad preamble", || {
        plain.stats().handshake_failures == 2
    })
    .await;
    assert_eq!(host.stats().connections_established, 0);
    assert_still_serving(&server, &security).await;
}

#[actix_rt::test]
async fn a_certificate_of_another_ca_is_refused() {
    let cluster = ca("cluster");
    let intruders = ca("intruders");
    let security = TransportSecurity::new(None, Some(tls(&cluster, Validity::days(1), &cluster)));
    let host = service_with(secured(security.clone())).await;
    let (server, probe) = start_test_endpoint(&host);

    // A node of another cluster: it refuses the host's certificate first.
    let foreign = service_with(secured(TransportSecurity::new(
        None,
        Some(tls(&intruders, Validity::days(1), &intruders)),
    )))
    .await;
    let result = bounded(
        "foreign connect",
        foreign.connect::<TestEndpoint>(server.address()),
    )
    .await;
    assert_eq!(
        security_failure("foreign", result, host.address()),
        SecurityFailure::UntrustedCertificate
    );

    // A node that trusts the cluster CA but holds a certificate of another: the host refuses it.
    let sneaky = service_with(secured(TransportSecurity::new(
        None,
        Some(tls(&intruders, Validity::days(1), &cluster)),
    )))
    .await;
    let result = bounded(
        "sneaky connect",
        sneaky.connect::<TestEndpoint>(server.address()),
    )
    .await;
    match security_failure("sneaky", result, host.address()) {
        SecurityFailure::CertificateRefusedByPeer(reason) => {
            assert!(reason.contains("not signed by a CA"), "{reason}")
        }
        other => panic!("expected CertificateRefusedByPeer, got {other:?}"),
    }
    eventually("the host counts both refusals", || {
        host.stats().handshake_failures == 2
    })
    .await;
    assert_eq!(host.stats().connections_established, 0);
    assert_eq!(probe.adds.load(Ordering::SeqCst), 0);
    assert_still_serving(&server, &security).await;
}

#[actix_rt::test]
async fn an_expired_certificate_is_refused_either_way() {
    let cluster = ca("cluster");
    let security = TransportSecurity::new(None, Some(tls(&cluster, Validity::days(1), &cluster)));
    let expired = TransportSecurity::new(
        None,
        Some(tls(
            &cluster,
            Validity::expired(Duration::from_secs(86_400)),
            &cluster,
        )),
    );
    let host = service_with(secured(security.clone())).await;
    let (server, _) = start_test_endpoint(&host);
    let stale = service_with(secured(expired)).await;
    let (stale_server, _) = start_test_endpoint(&stale);

    // The node with the expired certificate dials: the host refuses it and says why.
    let result = bounded(
        "expired dials",
        stale.connect::<TestEndpoint>(server.address()),
    )
    .await;
    assert_eq!(
        security_failure("expired dials", result, host.address()),
        SecurityFailure::CertificateRefusedByPeer("our certificate has expired".into())
    );
    // A good node dials the one with the expired certificate and refuses it itself.
    let result = bounded(
        "dial the expired",
        host.connect::<TestEndpoint>(stale_server.address()),
    )
    .await;
    assert_eq!(
        security_failure("dial the expired", result, stale.address()),
        SecurityFailure::CertificateExpired
    );
    eventually("the host counts both", || {
        host.stats().handshake_failures == 2
    })
    .await;
    assert_eq!(host.stats().connections_established, 0);
    assert_still_serving(&server, &security).await;
}

// ---- arbitrary bytes ----

/// Whatever bytes a client sends to a secret-protected RPC port, the node refuses it (counted,
/// nothing answered past a challenge), never panics, and still answers a good client.
#[test]
fn arbitrary_bytes_never_get_past_the_secret() {
    let system = actix_rt::System::new();
    let (host, server, good, gw) = system.block_on(async {
        let host = service_with(secured(
            TransportSecurity::new(Some(secret(SECRET)), None).with_timeout(Duration::from_secs(5)),
        ))
        .await;
        let (server, _) = start_test_endpoint(&host);
        let good = service_with(with_secret(SECRET)).await;
        let gw = bounded(
            "good connect",
            good.connect::<TestEndpoint>(server.address()),
        )
        .await
        .expect("the good node connects");
        (host, server, good, gw)
    });
    // Half the cases start like a HELLO for the RPC channel, to get past the magic.
    let bytes = (
        any::<bool>(),
        proptest::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(|(hello, rest)| {
            if hello {
                [&handshake::MAGIC[..], &[handshake::VERSION, 1], &rest[..]].concat()
            } else {
                rest
            }
        });
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 32,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let result = runner.run(&bytes, |bytes| {
        system.block_on(async {
            let before = host.stats().handshake_failures;
            let mut raw = TcpStream::connect(host.local_addr())
                .await
                .expect("connect");
            let _ = raw.write_all(&bytes).await;
            let _ = raw.shutdown().await;
            let answer = read_until_closed(&mut raw).await;
            prop_assert!(
                answer.len() <= handshake::CHALLENGE_LEN + 1,
                "answered {} bytes",
                answer.len()
            );
            if answer.len() == handshake::CHALLENGE_LEN + 1 {
                prop_assert_ne!(answer[handshake::CHALLENGE_LEN], 0);
            }
            eventually("the refusal is counted", || {
                host.stats().handshake_failures == before + 1
            })
            .await;
            prop_assert_eq!(
                bounded("the good node's ask", gw.ask(Echo("ok".into()))).await,
                Ok("ok".to_string())
            );
            Ok(())
        })
    });
    if let Err(err) = result {
        panic!("{err}");
    }
    system.block_on(async {
        let stats = host.stats();
        assert_eq!(stats.connections_established, 1, "only the good node");
        assert_eq!(stats.protocol_violations, 0);
        assert_still_serving(&server, &host.config().security).await;
        bounded("close good", good.close()).await.expect("closes");
        bounded("close host", host.close()).await.expect("closes");
    });
}

/// The handshake failure counter includes security refusals next to RPC ones, and an RPC
/// handshake problem behind a passed security handshake is still the RPC's typed error.
#[actix_rt::test]
async fn a_cluster_id_mismatch_behind_the_secret_is_still_reported() {
    let host = service_with(with_secret(SECRET)).await;
    let (server, _) = start_test_endpoint(&host);
    let elsewhere = service_with(RpcConfig {
        cluster_id: "elsewhere".into(),
        ..with_secret(SECRET)
    })
    .await;
    match bounded(
        "connect across clusters",
        elsewhere.connect::<TestEndpoint>(server.address()),
    )
    .await
    {
        Err(RpcError::Handshake {
            failure: HandshakeFailure::ClusterIdMismatch { local, remote },
            ..
        }) => assert_eq!((local.as_str(), remote.as_str()), ("elsewhere", "default")),
        other => panic!("expected a cluster id mismatch, got {other:?}"),
    }
    eventually("the host counts it", || {
        host.stats().handshake_failures == 1
    })
    .await;
    assert_still_serving(&server, &host.config().security).await;
}
