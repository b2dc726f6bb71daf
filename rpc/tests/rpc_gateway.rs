//! Gateways: Flink's RPC scenarios 7 and 9–14 (reference §10.3), each run on every path a call can
//! take: local (typed, no serialization), local with forced serialization, and remote over TCP.

mod support;

use std::sync::Arc;
use std::time::Duration;

use rflink_rpc::{
    AbstractId, CodecDirection, HandshakeFailure, RpcAddress, RpcConfig, RpcError, RpcGateway,
    RpcServer, RpcService,
};
use support::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Local,
    Forced,
    Remote,
}

const SHAPES: [Shape; 3] = [Shape::Local, Shape::Forced, Shape::Remote];

struct Setup {
    host: RpcService,
    caller: RpcService,
    server: RpcServer<TestEndpoint>,
    gw: RpcGateway<TestEndpoint>,
}

/// The service hosting the endpoint and the one calling it, for `shape`: the same service
/// (forcing serialization for `Forced`), or two services for `Remote`.
async fn services(shape: Shape, config: RpcConfig) -> (RpcService, RpcService) {
    let host = service_with(RpcConfig {
        force_serialization: shape == Shape::Forced,
        ..config.clone()
    })
    .await;
    let caller = if shape == Shape::Remote {
        service_with(config).await
    } else {
        host.clone()
    };
    (host, caller)
}

async fn setup(shape: Shape, config: RpcConfig) -> Setup {
    let (host, caller) = services(shape, config).await;
    let (server, _) = start_test_endpoint(&host);
    let gw = bounded("connect", caller.connect::<TestEndpoint>(server.address()))
        .await
        .expect("connects");
    assert_eq!(gw.is_local(), shape != Shape::Remote);
    Setup {
        host,
        caller,
        server,
        gw,
    }
}

/// Scenario 7: a handler's error reaches the caller with its type intact, sync and async.
#[actix_rt::test]
async fn handler_errors_arrive_typed() {
    for shape in SHAPES {
        let s = setup(shape, RpcConfig::default()).await;
        let sync = bounded(
            "sync failure",
            s.gw.ask(Fail {
                code: 3,
                asynchronously: false,
            }),
        )
        .await;
        assert_eq!(sync, Ok(Err(TestError::Refused(3))), "{shape:?}");
        let asynchronous = bounded(
            "async failure",
            s.gw.ask(Fail {
                code: 4,
                asynchronously: true,
            }),
        )
        .await;
        assert_eq!(
            asynchronous,
            Ok(Err(TestError::BadInput {
                input: "code 4".into()
            })),
            "{shape:?}"
        );
    }
}

/// Scenario 9: a slow endpoint makes an ask time out after the default timeout; an explicit
/// per-call timeout overrides it. The endpoint keeps serving meanwhile.
#[actix_rt::test]
async fn slow_endpoint_times_out_and_per_call_timeout_overrides() {
    for shape in SHAPES {
        let config = RpcConfig {
            ask_timeout: Duration::from_millis(100),
            ..RpcConfig::default()
        };
        let s = setup(shape, config).await;
        assert_eq!(s.gw.ask_timeout(), Duration::from_millis(100));
        let slow = SlowEcho {
            ms: 5_000,
            text: "late".into(),
        };
        match bounded("slow ask", s.gw.ask(slow)).await {
            Err(RpcError::Timeout {
                recipient,
                message,
                timeout,
            }) => {
                assert_eq!(recipient, s.server.address().to_string());
                assert_eq!(message, "SlowEcho");
                assert_eq!(timeout, Duration::from_millis(100));
            }
            other => panic!("{shape:?}: expected Timeout, got {other:?}"),
        }
        let patient = SlowEcho {
            ms: 300,
            text: "on time".into(),
        };
        let reply = bounded(
            "patient ask",
            s.gw.ask_with_timeout(patient, Duration::from_secs(20)),
        )
        .await;
        assert_eq!(reply, Ok("on time".into()), "{shape:?}");
        assert_eq!(
            bounded("echo", s.gw.ask(Echo("alive".into()))).await,
            Ok("alive".into())
        );
    }
}

/// Scenario 10: an ask to a terminated endpoint, or to a node that shut down, fails at once with
/// RecipientUnreachable, not after the (here very long) timeout.
#[actix_rt::test]
async fn gone_recipients_fail_fast() {
    for shape in SHAPES {
        let s = setup(shape, RpcConfig::default()).await;
        let gw = s.gw.clone().with_ask_timeout(Duration::from_secs(3600));
        bounded("endpoint close", s.server.close())
            .await
            .expect("closes");
        match bounded("ask to terminated endpoint", gw.ask(Echo("?".into()))).await {
            Err(RpcError::RecipientUnreachable {
                recipient, message, ..
            }) => {
                assert_eq!(recipient, s.server.address().to_string());
                assert_eq!(message, "Echo");
            }
            other => panic!("{shape:?}: expected RecipientUnreachable, got {other:?}"),
        }
        assert!(
            matches!(gw.tell(Add(1)), Err(RpcError::RecipientUnreachable { .. }))
                || shape == Shape::Remote
        );
    }

    // A node that shuts down while an ask is in flight, and asks after that.
    let s = setup(Shape::Remote, RpcConfig::default()).await;
    let gw = s.gw.clone().with_ask_timeout(Duration::from_secs(3600));
    let in_flight = tokio::spawn({
        let gw = gw.clone();
        async move {
            gw.ask(SlowEcho {
                ms: 3_600_000,
                text: "never".into(),
            })
            .await
        }
    });
    // The slow ask is on the wire once the endpoint answers an ask queued behind it.
    assert_eq!(
        bounded("echo", gw.ask(Echo("x".into()))).await,
        Ok("x".into())
    );
    bounded("host close", s.host.close())
        .await
        .expect("host closes");
    let pending = bounded("in-flight ask", in_flight).await.expect("task");
    match pending {
        // Closing a service terminates its endpoints before its transport, and an endpoint that
        // terminates with a reply pending answers for it.
        Err(RpcError::RecipientUnreachable {
            reason, message, ..
        }) => {
            assert_eq!(reason, "the endpoint terminated before answering");
            assert_eq!(message, "SlowEcho");
        }
        other => panic!("expected RecipientUnreachable, got {other:?}"),
    }
    let after = bounded("ask to a dead node", gw.ask(Echo("x".into()))).await;
    assert!(
        matches!(after, Err(RpcError::RecipientUnreachable { .. })),
        "{after:?}"
    );
    drop(s.caller);
}

/// Scenario 11: connecting to an address with no node, or no such endpoint, fails with a
/// connection error; a gateway of the wrong type fails the handshake.
#[actix_rt::test]
async fn connect_checks_address_endpoint_and_gateway_type() {
    let (host, caller) = (service().await, service().await);
    let (server, _) = start_test_endpoint(&host);
    let leader = host
        .start_server(Leader::new(LeaderId::generate()))
        .expect("starts");
    for svc in [&host, &caller] {
        let missing: RpcAddress = format!("rflink://{}/nobody_0", host.address())
            .parse()
            .expect("address");
        match bounded(
            "connect to unknown endpoint",
            svc.connect::<TestEndpoint>(&missing),
        )
        .await
        {
            Err(RpcError::EndpointNotFound { endpoint, .. }) => assert_eq!(endpoint, "nobody_0"),
            other => panic!("expected EndpointNotFound, got {other:?}"),
        }
        match bounded(
            "connect with the wrong gateway",
            svc.connect::<Leader>(server.address()),
        )
        .await
        {
            Err(RpcError::Handshake {
                failure:
                    HandshakeFailure::WrongGateway {
                        requested, actual, ..
                    },
                ..
            }) => {
                assert_eq!(requested, "LeaderGateway");
                assert_eq!(actual, "TestGateway");
            }
            other => panic!("expected a WrongGateway handshake error, got {other:?}"),
        }
        assert!(svc.connect::<Leader>(leader.address()).await.is_ok());
    }
    // A port with no listener: bind one, learn its port, close it.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = dead.local_addr().expect("addr").port();
    drop(dead);
    let nowhere = RpcAddress::new("127.0.0.1", port, "test_0").expect("address");
    assert!(matches!(
        bounded(
            "connect to a dead port",
            caller.connect::<TestEndpoint>(&nowhere)
        )
        .await,
        Err(RpcError::Connection { .. })
    ));
    // Another cluster: the handshake fails on both sides.
    let stranger = service_with(RpcConfig {
        cluster_id: "other-cluster".into(),
        ..RpcConfig::default()
    })
    .await;
    match bounded(
        "connect across clusters",
        stranger.connect::<TestEndpoint>(server.address()),
    )
    .await
    {
        Err(RpcError::Handshake {
            failure: HandshakeFailure::ClusterIdMismatch { local, remote },
            ..
        }) => assert_eq!(
            (local.as_str(), remote.as_str()),
            ("other-cluster", "default")
        ),
        other => panic!("expected ClusterIdMismatch, got {other:?}"),
    }
    assert!(stranger.stats().handshake_failures >= 1);
    eventually("the acceptor counts the refusal", || {
        host.stats().handshake_failures >= 1
    })
    .await;
}

/// Scenario 12: a fenced call with the right token succeeds, a wrong one gives
/// FencingTokenMismatch, and an unfenced gateway to a fenced endpoint is refused.
#[actix_rt::test]
async fn fencing_tokens_are_checked_before_any_handler() {
    for shape in SHAPES {
        let (host, caller) = services(shape, RpcConfig::default()).await;
        let token = LeaderId::generate();
        let server = host.start_server(Leader::new(token)).expect("starts");
        server.start();
        let addr = server.address();

        let right = caller
            .connect_fenced::<Leader>(addr, token)
            .await
            .expect("connects");
        assert_eq!(right.fencing_token(), Some(token));
        assert_eq!(
            bounded("fenced ask", right.ask(WhoLeads)).await,
            Ok(token.to_string())
        );

        let stale = LeaderId::generate();
        let wrong = caller
            .connect_fenced::<Leader>(addr, stale)
            .await
            .expect("connects");
        match bounded("stale token", wrong.ask(Echo("x".into()))).await {
            Err(RpcError::FencingTokenMismatch {
                endpoint,
                expected,
                received,
            }) => {
                assert_eq!(endpoint, addr.to_string());
                assert_eq!(expected, token.as_abstract_id());
                assert_eq!(received, stale.as_abstract_id());
            }
            other => panic!("{shape:?}: expected FencingTokenMismatch, got {other:?}"),
        }

        let unfenced = caller.connect::<Leader>(addr).await.expect("connects");
        assert_eq!(unfenced.fencing_token(), None);
        match bounded("unfenced", unfenced.ask(WhoLeads)).await {
            Err(RpcError::UnfencedMessage { message, .. }) => assert_eq!(message, "WhoLeads"),
            other => panic!("{shape:?}: expected UnfencedMessage, got {other:?}"),
        }
        // The endpoint's own gateway carries its token.
        assert_eq!(
            server.self_gateway().ask(WhoLeads).await,
            Ok(token.to_string())
        );
        // Refused tells reach no handler: the endpoint is still consistent and serving.
        assert_eq!(right.ask(Echo("ok".into())).await, Ok("ok".into()));
        assert_ne!(AbstractId::from_u128(0), token.as_abstract_id());
    }
}

/// Scenario 13: a response larger than the frame size is an error for a remote caller (local
/// callers are unaffected); an oversized request fails at the sender at once with
/// FrameTooLarge, unlike Flink's silent drop and timeout.
#[actix_rt::test]
async fn oversized_frames_fail_loudly_at_the_sender() {
    let max = 64 * 1024;
    for shape in SHAPES {
        let s = setup(
            shape,
            RpcConfig {
                max_frame_size: max,
                ask_timeout: Duration::from_secs(3600),
                ..RpcConfig::default()
            },
        )
        .await;
        let big_reply = bounded("big reply", s.gw.ask(Blob(2 * max))).await;
        if shape == Shape::Remote {
            match big_reply {
                Err(RpcError::FrameTooLarge { size, max: limit }) => {
                    assert!(size > 2 * max as u64);
                    assert_eq!(limit, max as u64);
                }
                other => panic!("expected FrameTooLarge, got {other:?}"),
            }
            eventually("the server counts the oversized reply", || {
                s.host.stats().oversized_frames == 1
            })
            .await;
        } else {
            assert_eq!(big_reply.map(|b| b.0.len()), Ok(2 * max), "{shape:?}");
        }

        let big_request = Upload(serde_bytes_vec::Bytes(vec![1; 2 * max]));
        let sent = bounded("big request", s.gw.ask(big_request)).await;
        if shape == Shape::Remote {
            assert!(
                matches!(sent, Err(RpcError::FrameTooLarge { .. })),
                "{sent:?}"
            );
            assert_eq!(s.caller.stats().oversized_frames, 1);
            let tell = s.gw.tell(Add(1));
            assert_eq!(tell, Ok(()));
        } else {
            assert_eq!(sent, Ok(2 * max), "{shape:?}");
        }
        // The connection and endpoint are fine afterwards.
        assert_eq!(
            bounded("echo after", s.gw.ask(Echo("fine".into()))).await,
            Ok("fine".into())
        );
        assert_eq!(
            bounded(
                "upload that fits",
                s.gw.ask(Upload(serde_bytes_vec::Bytes(vec![1; 1000])))
            )
            .await,
            Ok(1000)
        );
    }
}

/// Scenario 14: an argument that cannot be serialized fails on the caller's side for a remote
/// endpoint; with forced serialization local calls fail the same way.
#[actix_rt::test]
async fn unserializable_arguments_fail_at_the_caller() {
    for shape in SHAPES {
        let s = setup(shape, RpcConfig::default()).await;
        let result = bounded("strange ask", s.gw.ask(Strange(Unserializable))).await;
        if shape == Shape::Local {
            assert_eq!(result, Ok(true));
        } else {
            match result {
                Err(RpcError::Codec {
                    direction,
                    what,
                    detail,
                }) => {
                    assert_eq!(direction, CodecDirection::Serialize);
                    assert_eq!(what, "message Strange");
                    assert!(detail.contains("refuses"), "{detail}");
                }
                other => panic!("{shape:?}: expected a Codec error, got {other:?}"),
            }
        }
        assert_eq!(
            bounded("echo after", s.gw.ask(Echo("ok".into()))).await,
            Ok("ok".into())
        );
    }
}

/// The gateway is Send and its futures are Send: usable from any thread or tokio task.
#[actix_rt::test]
async fn gateways_work_from_other_threads() {
    fn assert_send<T: Send>(_: &T) {}
    let (host, caller) = (service().await, service().await);
    let (server, _) = start_test_endpoint(&host);
    let remote = caller
        .connect::<TestEndpoint>(server.address())
        .await
        .expect("remote");
    let local = host
        .connect::<TestEndpoint>(server.address())
        .await
        .expect("local");
    let fut = remote.ask(Total);
    assert_send(&fut);
    drop(fut);
    let handle = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let a = remote.ask(Echo("from a thread".into())).await;
            let b = local.ask(Echo("and locally".into())).await;
            (a, b)
        })
    });
    let (a, b) = bounded("thread", async {
        tokio::task::spawn_blocking(move || handle.join()).await
    })
    .await
    .expect("join")
    .expect("thread");
    assert_eq!(a, Ok("from a thread".into()));
    assert_eq!(b, Ok("and locally".into()));
    let _ = Arc::new(host);
}

/// Tells travel in batches; fencing still applies to every one of them: a stale token's tells
/// are all dropped, the right token's all applied, in order, on every path.
#[actix_rt::test]
async fn batched_tells_are_fenced_and_ordered() {
    for shape in SHAPES {
        let (host, caller) = services(shape, RpcConfig::default()).await;
        let token = LeaderId::generate();
        let server = host.start_server(Leader::new(token)).expect("starts");
        server.start();
        let right = caller
            .connect_fenced::<Leader>(server.address(), token)
            .await
            .expect("connects");
        let stale = caller
            .connect_fenced::<Leader>(server.address(), LeaderId::generate())
            .await
            .expect("connects");
        for i in 0..500 {
            right.tell(Note(i)).expect("queued");
            stale.tell(Note(1_000_000 + i)).expect("queued");
        }
        for i in 500..1000 {
            right.tell(Note(i)).expect("queued");
        }
        let notes = bounded("notes", right.ask(Notes)).await.expect("notes");
        assert_eq!(notes, (0..1000).collect::<Vec<u64>>(), "{shape:?}");
    }
}
