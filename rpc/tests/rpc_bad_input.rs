//! Bad input at the transport: every case gets a typed error or a closed connection with a warn,
//! and the node keeps serving a well-behaved peer afterwards.

mod support;

use std::time::Duration;

use bytes::BytesMut;
use rflink_rpc::transport::frame::{self, Frame, Hello, RequestHeader};
use rflink_rpc::{
    AbstractId, HandshakeFailure, RpcAddress, RpcConfig, RpcError, RpcServer, RpcService,
};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MAX: usize = 10 * 1024 * 1024;

/// A hand-driven peer that can say anything.
struct RawPeer {
    stream: TcpStream,
    buf: BytesMut,
}

impl RawPeer {
    async fn connect(service: &RpcService) -> RawPeer {
        let stream = TcpStream::connect(service.local_addr())
            .await
            .expect("tcp connect");
        RawPeer {
            stream,
            buf: BytesMut::new(),
        }
    }

    /// Connects and completes a proper handshake.
    async fn handshaken(service: &RpcService) -> RawPeer {
        let mut peer = RawPeer::connect(service).await;
        let hello = Hello {
            cluster_id: "default".into(),
            instance: AbstractId::generate(),
            advertised: "127.0.0.1:1".into(),
        };
        peer.send(&frame::preamble()).await;
        peer.send(&frame::encode_hello(&hello, MAX).expect("hello"))
            .await;
        assert_eq!(peer.preamble().await, Some(frame::preamble()));
        assert!(matches!(peer.frame().await, Some(Frame::HelloOk(_))));
        peer
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    async fn preamble(&mut self) -> Option<[u8; frame::PREAMBLE_LEN]> {
        let mut p = [0u8; frame::PREAMBLE_LEN];
        match bounded("preamble", self.stream.read_exact(&mut p)).await {
            Ok(_) => Some(p),
            Err(_) => None,
        }
    }

    /// The next frame from the node, or `None` once it closed the connection.
    async fn frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(body) =
                frame::split_frame(&mut self.buf, MAX).expect("node sends valid frames")
            {
                return Some(frame::decode(body).expect("node sends decodable frames"));
            }
            let n = bounded("a frame from the node", self.stream.read_buf(&mut self.buf))
                .await
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
        }
    }

    async fn request(
        &mut self,
        id: u64,
        endpoint: &str,
        message: &str,
        token: Option<AbstractId>,
        payload: &impl serde::Serialize,
    ) {
        let header = RequestHeader {
            expects_reply: true,
            token,
            endpoint,
            message,
        };
        let mut bytes = frame::encode_request(header, payload, MAX).expect("encode");
        frame::set_request_id(&mut bytes, id);
        self.send(&bytes).await;
    }

    async fn response(&mut self, id: u64) -> Result<bytes::Bytes, RpcError> {
        match self.frame().await {
            Some(Frame::Response { id: got, result }) => {
                assert_eq!(got, id);
                result
            }
            other => panic!("expected a response to {id}, got {other:?}"),
        }
    }
}

/// A good citizen still gets served: a fresh service connects and asks.
async fn assert_still_serving(server: &RpcServer<TestEndpoint>) {
    let good = service().await;
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
    good.close().await.expect("close");
}

#[actix_rt::test]
async fn garbage_instead_of_a_preamble_is_dropped() {
    let host = service().await;
    let (server, _) = start_test_endpoint(&host);
    let mut peer = RawPeer::connect(&host).await;
    peer.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(
        peer.preamble().await,
        None,
        "an http client must get nothing back"
    );
    eventually("the refusal is counted", || {
        host.stats().handshake_failures == 1
    })
    .await;
    assert_still_serving(&server).await;
}

#[actix_rt::test]
async fn a_wrong_protocol_version_is_refused_on_both_sides() {
    let host = service().await;
    let (server, _) = start_test_endpoint(&host);
    // Acceptor side: a dialer speaking version 99 gets a typed rejection.
    let mut peer = RawPeer::connect(&host).await;
    peer.send(b"RFLK\x00\x63").await;
    assert_eq!(peer.preamble().await, Some(frame::preamble()));
    match peer.frame().await {
        Some(Frame::HelloRejected(RpcError::Handshake {
            failure: HandshakeFailure::VersionMismatch { local, remote },
            ..
        })) => assert_eq!((local, remote), (frame::PROTOCOL_VERSION, 99)),
        other => panic!("expected a version rejection, got {other:?}"),
    }
    assert!(
        peer.frame().await.is_none(),
        "the node closes after rejecting"
    );

    // Dialer side: an acceptor answering with version 99 fails the connect, typed.
    let fake = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = fake.local_addr().expect("addr").port();
    let acceptor = tokio::spawn(async move {
        let (mut s, _) = fake.accept().await.expect("accept");
        let mut p = [0u8; 6];
        let _ = s.read_exact(&mut p).await;
        let _ = s.write_all(b"RFLK\x00\x63").await;
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink).await;
    });
    let target = RpcAddress::new("127.0.0.1", port, "test_0").expect("address");
    match bounded(
        "connect to a v99 node",
        host.connect::<TestEndpoint>(&target),
    )
    .await
    {
        Err(RpcError::Handshake {
            failure: HandshakeFailure::VersionMismatch { local, remote },
            ..
        }) => assert_eq!((local, remote), (frame::PROTOCOL_VERSION, 99)),
        other => panic!("expected a version mismatch, got {other:?}"),
    }
    acceptor.abort();
    assert_still_serving(&server).await;
}

#[actix_rt::test]
async fn a_request_before_the_hello_is_refused() {
    let host = service().await;
    let (server, _) = start_test_endpoint(&host);
    let mut peer = RawPeer::connect(&host).await;
    peer.send(&frame::preamble()).await;
    peer.request(1, "test_0", "Echo", None, &("x",)).await;
    assert_eq!(peer.preamble().await, Some(frame::preamble()));
    assert!(matches!(
        peer.frame().await,
        Some(Frame::HelloRejected(RpcError::Handshake {
            failure: HandshakeFailure::Unexpected(_),
            ..
        }))
    ));
    assert_still_serving(&server).await;
}

#[actix_rt::test]
async fn a_silent_dialer_times_out_without_blocking_others() {
    let host = service_with(RpcConfig {
        connect_timeout: Duration::from_millis(200),
        ..RpcConfig::default()
    })
    .await;
    let (server, _) = start_test_endpoint(&host);
    let mut silent = RawPeer::connect(&host).await;
    // Served while the silent one hangs in its handshake.
    assert_still_serving(&server).await;
    assert_eq!(
        silent.preamble().await,
        None,
        "the node gives up on a silent dialer"
    );
    eventually("the timeout is counted", || {
        host.stats().handshake_failures >= 1
    })
    .await;
}

#[actix_rt::test]
async fn an_oversized_length_prefix_closes_only_that_connection() {
    let host = service().await;
    let (server, _) = start_test_endpoint(&host);
    let mut peer = RawPeer::handshaken(&host).await;
    peer.send(&[0xff, 0xff, 0xff, 0xf0, 0x10]).await;
    match peer.frame().await {
        Some(Frame::Fatal(RpcError::FrameTooLarge { size, max })) => {
            assert_eq!(max, MAX as u64);
            assert!(size > max);
        }
        other => panic!("expected Fatal(FrameTooLarge), got {other:?}"),
    }
    assert!(peer.frame().await.is_none(), "the connection is closed");
    assert_eq!(host.stats().oversized_frames, 1);
    assert_still_serving(&server).await;
}

#[actix_rt::test]
async fn malformed_frames_close_only_that_connection() {
    let host = service().await;
    let (server, _) = start_test_endpoint(&host);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("unknown kind", vec![0, 0, 0, 2, 0x7e, 0]),
        ("zero length", vec![0, 0, 0, 0]),
        ("truncated request header", vec![0, 0, 0, 3, 0x10, 0, 0]),
        ("bad request flags", vec![0, 0, 0, 2, 0x10, 0xff]),
        ("handshake after handshake", {
            let hello = Hello {
                cluster_id: "default".into(),
                instance: AbstractId::generate(),
                advertised: "x:1".into(),
            };
            frame::encode_hello(&hello, MAX).expect("hello")
        }),
    ];
    let count = cases.len() as u64;
    for (what, bytes) in cases {
        let mut peer = RawPeer::handshaken(&host).await;
        peer.send(&bytes).await;
        match peer.frame().await {
            Some(Frame::Fatal(RpcError::ProtocolViolation { detail, .. })) => {
                assert!(!detail.is_empty(), "{what}")
            }
            other => panic!("{what}: expected Fatal(ProtocolViolation), got {other:?}"),
        }
        assert!(
            peer.frame().await.is_none(),
            "{what}: the connection is closed"
        );
    }
    assert_eq!(host.stats().protocol_violations, count);
    assert_still_serving(&server).await;
}

#[actix_rt::test]
async fn a_truncated_frame_then_hang_up_is_survived() {
    let host = service().await;
    let (server, _) = start_test_endpoint(&host);
    let mut peer = RawPeer::handshaken(&host).await;
    // Announce 100 bytes, send 10, hang up.
    peer.send(&[0, 0, 0, 100, 0x10, 1, 2, 3, 4, 5, 6, 7, 8, 9])
        .await;
    drop(peer);
    assert_still_serving(&server).await;
    eventually("the dead connection is dropped", || {
        host.stats().open_connections == 0
    })
    .await;
}

#[actix_rt::test]
async fn bad_requests_get_typed_errors_and_the_connection_stays_usable() {
    let host = service().await;
    let (server, _) = start_test_endpoint(&host);
    let token = LeaderId::generate();
    let leader = host
        .start_server(Leader::new(token))
        .expect("leader starts");
    leader.start();
    let mut peer = RawPeer::handshaken(&host).await;

    // An undecodable payload: the endpoint answers a Codec error.
    let header = RequestHeader {
        expects_reply: true,
        token: None,
        endpoint: "test_0",
        message: "Echo",
    };
    let mut bytes = frame::encode_request(header, &(), MAX).expect("encode");
    bytes.pop(); // drop the encoded `()`: nil
    bytes.push(0xc1); // the one msgpack byte that is never valid
    let len = (bytes.len() - 4) as u32;
    bytes[..4].copy_from_slice(&len.to_be_bytes());
    frame::set_request_id(&mut bytes, 1);
    peer.send(&bytes).await;
    match peer.response(1).await {
        Err(RpcError::Codec { what, .. }) => assert_eq!(what, "message Echo"),
        other => panic!("expected a Codec error, got {other:?}"),
    }

    // An unknown message kind.
    peer.request(2, "test_0", "LaunchMissiles", None, &()).await;
    match peer.response(2).await {
        Err(RpcError::UnknownMessage {
            message, gateway, ..
        }) => {
            assert_eq!(message, "LaunchMissiles");
            assert_eq!(gateway, "TestGateway");
        }
        other => panic!("expected UnknownMessage, got {other:?}"),
    }

    // An unknown endpoint.
    peer.request(3, "nobody_7", "Echo", None, &("x",)).await;
    match peer.response(3).await {
        Err(RpcError::EndpointNotFound { endpoint, .. }) => assert_eq!(endpoint, "nobody_7"),
        other => panic!("expected EndpointNotFound, got {other:?}"),
    }
    assert_eq!(host.stats().unknown_endpoints, 1);

    // A stale fencing token, and a missing one.
    let stale = AbstractId::generate();
    peer.request(4, leader.address().endpoint(), "WhoLeads", Some(stale), &())
        .await;
    match peer.response(4).await {
        Err(RpcError::FencingTokenMismatch {
            expected, received, ..
        }) => {
            assert_eq!(expected, token.as_abstract_id());
            assert_eq!(received, stale);
        }
        other => panic!("expected FencingTokenMismatch, got {other:?}"),
    }
    peer.request(5, leader.address().endpoint(), "WhoLeads", None, &())
        .await;
    assert!(matches!(
        peer.response(5).await,
        Err(RpcError::UnfencedMessage { .. })
    ));

    // A response to a request never made is ignored.
    peer.send(&frame::encode_response_ok(999, &1u8, "stray", MAX).expect("encode"))
        .await;

    // Same connection, now a good request.
    // `Echo(String)` is a newtype: on the wire it is just the string.
    peer.request(6, "test_0", "Echo", None, &"fine").await;
    let body = peer.response(6).await.expect("echo succeeds");
    assert_eq!(
        rmp_serde::from_slice::<String>(&body).expect("string"),
        "fine"
    );
    peer.request(
        7,
        leader.address().endpoint(),
        "WhoLeads",
        Some(token.as_abstract_id()),
        &(),
    )
    .await;
    assert!(peer.response(7).await.is_ok());
    // Each refusal counted at its endpoint, each good request as handled.
    let metrics = host.metrics();
    let test = metrics.endpoint("test_0").expect("test endpoint listed");
    assert_eq!((test.handled, test.refused), (1, 2), "{test:?}");
    let leading = metrics
        .endpoint(leader.address().endpoint())
        .expect("leader listed");
    assert_eq!((leading.handled, leading.refused), (1, 2), "{leading:?}");
    assert_still_serving(&server).await;
}

/// Random byte streams after a good handshake: the node never panics (not even in a spawned task,
/// which tokio would otherwise swallow), and keeps serving.
#[actix_rt::test]
async fn random_streams_never_panic_the_node() {
    use rand::{Rng, SeedableRng};
    use std::sync::atomic::{AtomicUsize, Ordering};

    static PANICS: AtomicUsize = AtomicUsize::new(0);
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        previous(info);
    }));

    let host = service().await;
    let (server, _) = start_test_endpoint(&host);
    let leader = host
        .start_server(Leader::new(LeaderId::generate()))
        .expect("leader");
    leader.start();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    for _ in 0..200 {
        let mut peer = RawPeer::handshaken(&host).await;
        let len = rng.random_range(1..2048);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        // Half the time, make the length prefix plausible so the body reaches the decoder.
        if rng.random_bool(0.5) && bytes.len() > 4 {
            let body = (bytes.len() - 4) as u32;
            bytes[..4].copy_from_slice(&body.to_be_bytes());
            // And aim some at real endpoints' kinds.
            bytes[4] = [0x10, 0x11, 0x12, 0x20, 0x21][rng.random_range(0..5)];
        }
        peer.send(&bytes).await;
        // Whatever it answers must be well-formed; it may also just wait for more bytes.
        let _ = tokio::time::timeout(std::time::Duration::from_millis(5), peer.frame()).await;
    }
    assert_still_serving(&server).await;
    assert_eq!(
        PANICS.load(Ordering::SeqCst),
        0,
        "the node panicked on random input"
    );
    let stats = host.stats();
    assert!(
        stats.protocol_violations + stats.oversized_frames > 0,
        "{stats:?}"
    );
}

/// A node that closes tells each connected peer why, so a clean shutdown is not mistaken for a
/// crash.
#[actix_rt::test]
async fn a_closing_node_tells_its_peers_why() {
    let host = service().await;
    let (_server, _) = start_test_endpoint(&host);
    let mut peer = RawPeer::handshaken(&host).await;
    let address = host.address().to_string();
    bounded("close", host.close()).await.expect("closes");
    match peer.frame().await {
        Some(Frame::Fatal(RpcError::RecipientUnreachable {
            recipient, reason, ..
        })) => {
            assert_eq!(recipient, address);
            assert_eq!(reason, "the node shut down");
        }
        other => panic!("expected a shutdown notice, got {other:?}"),
    }
    assert!(peer.frame().await.is_none(), "then the connection closes");
}
