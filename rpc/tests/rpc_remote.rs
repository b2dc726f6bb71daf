//! Two services on loopback: the remote path end to end, and connection management.

mod support;

use std::sync::atomic::Ordering;

use rflink_rpc::{RpcConfig, RpcError};
use support::*;

#[actix_rt::test]
async fn remote_ask_and_tell_round_trip() {
    let (a, b) = (service().await, service().await);
    let (server, probe) = start_test_endpoint(&b);
    let gw = bounded("connect", a.connect::<TestEndpoint>(server.address()))
        .await
        .expect("connects");
    assert!(!gw.is_local());
    assert_eq!(
        bounded("echo", gw.ask(Echo("hi".into()))).await,
        Ok("hi".to_string())
    );
    for i in 1..=100 {
        gw.tell(Add(i)).expect("tell queued");
    }
    // Tells and asks on one connection stay in order: the total is read after all the adds.
    assert_eq!(bounded("total", gw.ask(Total)).await, Ok(5050));
    assert_eq!(probe.adds.load(Ordering::SeqCst), 100);
    assert_eq!(a.stats().open_connections, 1);
    bounded("close a", a.close()).await.expect("a closes");
    bounded("close b", b.close()).await.expect("b closes");
}

/// Two nodes that dial each other at the same moment end up sharing one connection, and no call
/// made meanwhile is lost.
#[actix_rt::test]
async fn simultaneous_dials_settle_on_one_connection() {
    let mut raced = 0;
    for round in 0..20 {
        let (a, b) = (service().await, service().await);
        let (on_a, _) = start_test_endpoint(&a);
        let (on_b, _) = start_test_endpoint(&b);
        let (to_b, to_a) = futures::join!(
            a.connect::<TestEndpoint>(on_b.address()),
            b.connect::<TestEndpoint>(on_a.address())
        );
        let (to_b, to_a) = (to_b.expect("a reaches b"), to_a.expect("b reaches a"));
        for i in 0..50u64 {
            let (x, y) = futures::join!(to_b.ask(Echo(format!("{round}/{i}"))), to_a.ask(Total));
            assert_eq!(x, Ok(format!("{round}/{i}")));
            assert_eq!(y, Ok(0));
            to_b.tell(Add(1)).expect("tell");
        }
        assert_eq!(bounded("total", to_b.ask(Total)).await, Ok(50));
        if a.stats().connections_established > 1 {
            raced += 1;
        }
        eventually("a keeps one connection", || a.stats().open_connections == 1).await;
        eventually("b keeps one connection", || b.stats().open_connections == 1).await;
        // And it still works both ways.
        assert_eq!(to_a.ask(Echo("back".into())).await, Ok("back".into()));
        assert_eq!(to_b.ask(Echo("forth".into())).await, Ok("forth".into()));
    }
    // Both dials start before either handshake completes, so the race is the normal case here.
    assert!(raced > 0, "no round raced: the tie-break went untested");
    eprintln!("{raced} of 20 rounds raced");
}

/// A gateway whose node went away reconnects on its next use once the node is back.
#[actix_rt::test]
async fn gateway_reconnects_on_next_use() {
    let caller = service().await;
    let first = service().await;
    let (server, _) = start_test_endpoint(&first);
    let address = server.address().clone();
    let gw = caller
        .connect::<TestEndpoint>(&address)
        .await
        .expect("connects");
    assert_eq!(gw.ask(Echo("1".into())).await, Ok("1".into()));
    let port = first.port();
    bounded("close the first node", first.close())
        .await
        .expect("closes");
    assert!(matches!(
        bounded("ask while down", gw.ask(Echo("2".into()))).await,
        Err(RpcError::RecipientUnreachable { .. })
    ));
    // The node comes back on the same port (as a restarted TaskManager with a fixed port would).
    let second = service_with(RpcConfig {
        bind_port: port,
        ..RpcConfig::default()
    })
    .await;
    let (again, _) = start_test_endpoint(&second);
    assert_eq!(again.address(), &address);
    assert_eq!(
        bounded("ask after restart", gw.ask(Echo("3".into()))).await,
        Ok("3".into())
    );
    assert!(caller.stats().connections_established >= 2);
}

/// A peer that goes away is reported at once as a `PeerEvent`, so components can probe it instead
/// of waiting for their next heartbeat; an orderly drain is not reported.
#[actix_rt::test]
async fn lost_connections_are_reported_as_peer_events() {
    let (a, b) = (service().await, service().await);
    let mut events = a.peer_events();
    let (server, _) = start_test_endpoint(&b);
    let gw = a
        .connect::<TestEndpoint>(server.address())
        .await
        .expect("connects");
    assert_eq!(gw.ask(Total).await, Ok(0));
    let node = b.address().to_string();
    bounded("b closes", b.close()).await.expect("closes");
    match bounded("a peer event", events.recv()).await {
        Ok(rflink_rpc::PeerEvent::ConnectionLost { node: lost, reason }) => {
            assert_eq!(lost, node);
            assert!(reason.contains("shut down"), "{reason}");
        }
        other => panic!("expected ConnectionLost, got {other:?}"),
    }
}

/// `run_interval` ticks on the main thread until cancelled.
#[actix_rt::test]
async fn run_interval_ticks_until_cancelled() {
    let host = service().await;
    let (server, _) = start_test_endpoint(&host);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let task = server
        .call_async(
            move |_, ctx| {
                ctx.run_interval(std::time::Duration::from_millis(2), move |e, ctx| {
                    ctx.assert_main_thread();
                    e.total += 1;
                    let _ = tx.send(e.total);
                })
            },
            std::time::Duration::from_secs(10),
        )
        .await
        .expect("scheduled");
    for expected in 1..=3 {
        assert_eq!(bounded("tick", rx.recv()).await, Some(expected));
    }
    task.cancel();
    // After cancelling, the closure (and with it the sender) is dropped: the channel closes.
    let mut last = 3;
    while let Some(n) = bounded("drain", rx.recv()).await {
        last = n;
    }
    assert!(task.has_fired());
    assert!(last >= 3);
}
