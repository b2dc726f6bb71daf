//! Endpoint lifecycle and the main thread: Flink's RPC scenarios 1–6, 8 and 15 (reference §10.3).

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use rflink_rpc::{EndpointState, RpcError};
use support::*;

/// Scenario 1: a call before `start()` fails with EndpointNotStarted; after `start()` it succeeds.
#[actix_rt::test]
async fn call_before_start_is_refused_then_served() {
    let (host, caller) = (service().await, service().await);
    let probe = Arc::new(Probe::default());
    let server = host.start_server(TestEndpoint::new(probe)).expect("starts");
    let local = host
        .connect::<TestEndpoint>(server.address())
        .await
        .expect("local connect");
    let remote = caller
        .connect::<TestEndpoint>(server.address())
        .await
        .expect("remote connect");
    for gw in [&local, &remote] {
        match bounded("ask before start", gw.ask(Echo("x".into()))).await {
            Err(RpcError::EndpointNotStarted { endpoint, message }) => {
                assert_eq!(endpoint, server.address().to_string());
                assert_eq!(message, "Echo");
            }
            other => panic!("expected EndpointNotStarted, got {other:?}"),
        }
    }
    server.start();
    for gw in [&local, &remote] {
        assert_eq!(
            bounded("ask after start", gw.ask(Echo("y".into()))).await,
            Ok("y".into())
        );
    }
    // STOP refuses again until the next START (Flink's protected stop()).
    server.stop();
    assert!(matches!(
        bounded("ask after stop", remote.ask(Echo("z".into()))).await,
        Err(RpcError::EndpointNotStarted { .. })
    ));
    server.start();
    assert_eq!(
        bounded("ask after restart", local.ask(Echo("w".into()))).await,
        Ok("w".into())
    );
}

/// Scenario 2: `on_start` runs on the main thread before any RPC; a failing `on_start` stops the
/// actor and fails its termination future.
#[actix_rt::test]
async fn on_start_runs_first_and_its_failure_stops_the_endpoint() {
    let host = service().await;
    let probe = Arc::new(Probe::default());
    let server = host
        .start_server(TestEndpoint::new(Arc::clone(&probe)))
        .expect("starts");
    let gw = server.self_gateway();
    // Queued before START is processed: START is first in the mailbox, so on_start still runs first.
    server.start();
    let (a, b) = futures::join!(gw.ask(Echo("1".into())), gw.ask(Total));
    assert_eq!((a, b), (Ok("1".into()), Ok(0)));
    assert_eq!(probe.events(), vec!["on_start".to_string()]);

    let failing_probe = Arc::new(Probe::default());
    let mut endpoint = TestEndpoint::new(Arc::clone(&failing_probe));
    endpoint.lifecycle.fail_start = true;
    let failing = host.start_server(endpoint).expect("starts");
    failing.start();
    match bounded("termination after failed start", failing.termination()).await {
        Err(RpcError::StartFailed { endpoint, reason }) => {
            assert_eq!(endpoint, failing.address().to_string());
            assert!(reason.contains("on_start refused"), "{reason}");
        }
        other => panic!("expected StartFailed, got {other:?}"),
    }
    assert_eq!(
        failing_probe.stopped.load(Ordering::SeqCst),
        0,
        "on_stop must not run after a failed start"
    );
    assert!(matches!(
        bounded(
            "ask to a failed endpoint",
            failing.self_gateway().ask(Total)
        )
        .await,
        Err(RpcError::RecipientUnreachable { .. })
    ));
}

/// Scenario 3: an asynchronous `on_stop` keeps serving until its future completes; then the
/// termination future completes (with the failure if `on_stop` failed).
#[actix_rt::test]
async fn async_on_stop_keeps_serving_until_done() {
    let (host, caller) = (service().await, service().await);
    for fail_stop in [false, true] {
        let gate = Arc::new(tokio::sync::Notify::new());
        let probe = Arc::new(Probe::default());
        let mut endpoint = TestEndpoint::new(Arc::clone(&probe));
        endpoint.lifecycle.stop_gate = Some(Arc::clone(&gate));
        endpoint.lifecycle.fail_stop = fail_stop;
        let server = host.start_server(endpoint).expect("starts");
        server.start();
        let remote = caller
            .connect::<TestEndpoint>(server.address())
            .await
            .expect("connects");
        let termination = server.close();
        // TERMINATE is queued before these asks, so they are handled while on_stop is pending.
        assert_eq!(
            bounded("ask while terminating", remote.ask(Echo("still".into()))).await,
            Ok("still".into())
        );
        let state = server
            .call_async(|_, ctx| ctx.state(), Duration::from_secs(10))
            .await
            .expect("call_async while terminating");
        assert_eq!(state, EndpointState::Terminating);
        assert!(!server.is_terminated());
        gate.notify_one();
        let result = bounded("termination", termination).await;
        if fail_stop {
            assert!(
                matches!(result, Err(RpcError::StopFailed { .. })),
                "{result:?}"
            );
        } else {
            assert_eq!(result, Ok(()));
        }
        assert_eq!(probe.events(), vec!["on_start", "on_stop", "on_stop done"]);
        assert!(matches!(
            bounded("ask after termination", remote.ask(Echo("gone".into()))).await,
            Err(RpcError::RecipientUnreachable { .. })
        ));
    }
}

/// Scenario 4: concurrent RPCs to one endpoint never overlap, from many callers local and remote,
/// with the endpoint on its own thread; the main-thread assertion holds in handlers, run_async and
/// scheduled closures (it is a `debug_assert`, on in tests).
#[actix_rt::test]
async fn concurrent_calls_never_overlap() {
    let (host, caller) = (service().await, service().await);
    let arbiter = actix::Arbiter::new();
    let probe = Arc::new(Probe::default());
    let server = host
        .start_server_in(
            TestEndpoint::new(Arc::clone(&probe)),
            None,
            &arbiter.handle(),
        )
        .expect("starts on its own arbiter");
    server.start();
    let local = host
        .connect::<TestEndpoint>(server.address())
        .await
        .expect("local");
    let remote = caller
        .connect::<TestEndpoint>(server.address())
        .await
        .expect("remote");
    let mut calls = Vec::new();
    for i in 0..400 {
        let gw = if i % 2 == 0 {
            local.clone()
        } else {
            remote.clone()
        };
        calls.push(tokio::spawn(async move { gw.ask(Critical).await }));
    }
    for i in 0..50 {
        server.run_async(move |e, ctx| {
            ctx.assert_main_thread();
            e.total += i;
        });
        let _ = server.schedule_run_async(Duration::from_millis(i % 5), |_, ctx| {
            ctx.assert_main_thread()
        });
    }
    for call in calls {
        bounded("critical call", call)
            .await
            .expect("task")
            .expect("ask");
    }
    assert_eq!(bounded("total", local.ask(Total)).await, Ok((0..50).sum()));
    assert_eq!(probe.overlaps.load(Ordering::SeqCst), 0);
    bounded("close", server.close()).await.expect("closes");
    arbiter.stop();
}

/// Scenario 5: a scheduled closure runs no earlier than its delay; one cancelled before it fires
/// never runs; scheduling after close is ignored.
#[actix_rt::test]
async fn scheduling_respects_delay_cancellation_and_close() {
    let host = service().await;
    let (server, _probe) = start_test_endpoint(&host);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let scheduled_at = Instant::now();
    let delay = Duration::from_millis(30);
    let fired = server.schedule_run_async(delay, move |_, _| {
        let _ = tx.send(Instant::now());
    });
    let cancelled = server.schedule_run_async(Duration::from_millis(1), |e, _| e.total = 999);
    cancelled.cancel();
    let ran_at = bounded("scheduled closure", rx).await.expect("fires");
    assert!(
        ran_at.duration_since(scheduled_at) >= delay,
        "ran before its delay"
    );
    assert!(fired.has_fired());
    assert!(!cancelled.has_fired(), "a cancelled closure ran");
    assert_eq!(server.self_gateway().ask(Total).await, Ok(0));

    // Also from inside the endpoint, through RpcContext.
    let (tx, rx) = tokio::sync::oneshot::channel::<bool>();
    server.run_async(move |_, ctx| {
        let task = ctx.schedule_run_async(Duration::from_millis(1), |e, _| e.total = 1);
        task.cancel();
        ctx.schedule_run_async(Duration::from_millis(5), move |e, _| {
            let _ = tx.send(e.total == 0);
        });
    });
    assert_eq!(bounded("inner schedule", rx).await, Ok(true));

    bounded("close", server.close()).await.expect("closes");
    let dropped = Arc::new(AtomicBool::new(false));
    let guard = DropFlag(Arc::clone(&dropped));
    let late = server.schedule_run_async(Duration::ZERO, move |_, _| {
        let _guard = &guard;
        panic!("ran on a terminated endpoint");
    });
    eventually("the late closure is dropped unrun", || {
        dropped.load(Ordering::SeqCst)
    })
    .await;
    assert!(!late.has_fired());
}

struct DropFlag(Arc<AtomicBool>);
impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Scenario 6: `call_async` returns the closure's value, or Timeout when the closure is still
/// running at the deadline (the endpoint is blocked until the test releases it, after the timeout).
#[actix_rt::test]
async fn call_async_returns_value_or_times_out() {
    let host = service().await;
    let arbiter = actix::Arbiter::new();
    let server = host
        .start_server_in(
            TestEndpoint::new(Arc::new(Probe::default())),
            None,
            &arbiter.handle(),
        )
        .expect("starts");
    server.start();
    let value = server
        .call_async(|e, _| e.total + 41, Duration::from_secs(10))
        .await;
    assert_eq!(value, Ok(41));

    let (release, blocked) = mpsc::channel::<()>();
    let result = server
        .call_async(
            move |_, _| {
                let _ = blocked.recv_timeout(Duration::from_secs(30));
                7
            },
            Duration::from_millis(20),
        )
        .await;
    match result {
        Err(RpcError::Timeout {
            message, timeout, ..
        }) => {
            assert_eq!(message, "call_async");
            assert_eq!(timeout, Duration::from_millis(20));
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    release.send(()).expect("release the endpoint");
    assert_eq!(
        server
            .call_async(|_, _| "free", Duration::from_secs(10))
            .await,
        Ok("free")
    );
    let stopped = host
        .start_server(TestEndpoint::new(Arc::new(Probe::default())))
        .expect("starts");
    assert!(matches!(
        stopped.call_async(|_, _| (), Duration::from_secs(10)).await,
        Err(RpcError::EndpointNotStarted { .. })
    ));
    arbiter.stop();
}

/// Scenario 8: a tell returns at once and runs exactly once, locally and remotely.
#[actix_rt::test]
async fn tell_runs_exactly_once() {
    let (host, caller) = (service().await, service().await);
    let (server, probe) = start_test_endpoint(&host);
    let local = host
        .connect::<TestEndpoint>(server.address())
        .await
        .expect("local");
    let remote = caller
        .connect::<TestEndpoint>(server.address())
        .await
        .expect("remote");
    local.tell(Add(5)).expect("local tell");
    remote.tell(Add(7)).expect("remote tell");
    // An ask behind each tell on the same path observes it.
    assert_eq!(bounded("local total", local.ask(Total)).await, Ok(5));
    assert_eq!(bounded("remote total", remote.ask(Total)).await, Ok(12));
    assert_eq!(probe.adds.load(Ordering::SeqCst), 2);
}

/// Scenario 15: closing the service runs every endpoint's `on_stop`, then closes the transport.
#[actix_rt::test]
async fn closing_the_service_terminates_every_endpoint_then_the_transport() {
    let (host, caller) = (service().await, service().await);
    let (first, p1) = start_test_endpoint(&host);
    let (second, p2) = start_test_endpoint(&host);
    let remote = caller
        .connect::<TestEndpoint>(first.address())
        .await
        .expect("connects");
    assert_eq!(remote.ask(Total).await, Ok(0));
    bounded("service close", host.close())
        .await
        .expect("closes cleanly");
    assert_eq!(p1.stopped.load(Ordering::SeqCst), 1);
    assert_eq!(p2.stopped.load(Ordering::SeqCst), 1);
    assert!(first.is_terminated() && second.is_terminated());
    assert!(matches!(
        bounded("ask after close", remote.ask(Total)).await,
        Err(RpcError::RecipientUnreachable { .. })
    ));
    assert!(matches!(
        host.start_server(TestEndpoint::new(Arc::new(Probe::default()))),
        Err(RpcError::ServiceShutdown)
    ));
    eventually("the caller drops its connection", || {
        caller.stats().open_connections == 0
    })
    .await;
}

/// Endpoint names: `prefix_N`, unique per service, reusable after termination.
#[actix_rt::test]
async fn endpoint_names_are_unique_and_reusable_after_termination() {
    let host = service().await;
    let (a, _) = start_test_endpoint(&host);
    let (b, _) = start_test_endpoint(&host);
    assert_eq!(a.address().endpoint(), "test_0");
    assert_eq!(b.address().endpoint(), "test_1");
    let named = host
        .start_server_named(
            TestEndpoint::new(Arc::new(Probe::default())),
            Some("resourcemanager_0"),
        )
        .expect("named");
    assert!(matches!(
        host.start_server_named(
            TestEndpoint::new(Arc::new(Probe::default())),
            Some("resourcemanager_0")
        ),
        Err(RpcError::EndpointAlreadyExists { .. })
    ));
    assert!(matches!(
        host.start_server_named(
            TestEndpoint::new(Arc::new(Probe::default())),
            Some("bad/name")
        ),
        Err(RpcError::InvalidAddress { .. })
    ));
    bounded("close", named.close()).await.expect("closes");
    let again = host
        .start_server_named(
            TestEndpoint::new(Arc::new(Probe::default())),
            Some("resourcemanager_0"),
        )
        .expect("the name is free again");
    again.start();
    assert_eq!(again.self_gateway().ask(Total).await, Ok(0));
}

/// A `MainThreadHandle` runs closures on the endpoint's main thread from another OS thread, and
/// reports a terminated endpoint.
#[actix_rt::test]
async fn main_thread_handle_works_from_other_threads() {
    let host = service().await;
    let (server, _) = start_test_endpoint(&host);
    let handle = server
        .call_async(|_, ctx| ctx.main_thread_handle(), Duration::from_secs(10))
        .await
        .expect("handle");
    let (tx, rx) = tokio::sync::oneshot::channel();
    let h = handle.clone();
    std::thread::spawn(move || {
        assert!(h.run_async(move |e, ctx| {
            ctx.assert_main_thread();
            e.total = 9;
            let _ = tx.send(());
        }));
    })
    .join()
    .expect("thread");
    bounded("closure ran", rx).await.expect("ran");
    assert_eq!(server.self_gateway().ask(Total).await, Ok(9));
    bounded("close", server.close()).await.expect("closes");
    eventually("the handle sees the endpoint gone", || {
        !handle.run_async(|_, _| {})
    })
    .await;
}
