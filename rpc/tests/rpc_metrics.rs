//! `RpcService::metrics`: calls per method at the caller (local, forced through the codec, remote),
//! how asks ended, and each endpoint's mailbox depth and handled/refused messages.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use rflink_rpc::{
    rpc_protocol, Handler, MethodMetrics, Response, RpcConfig, RpcContext, RpcEndpoint, RpcError,
    RpcMessage, RpcProtocol, RpcService, Unfenced,
};
use serde::{Deserialize, Serialize};
use support::*;

/// The entry of `gateway`/`method` on `service`.
fn method(service: &RpcService, gateway: &str, method: &str) -> MethodMetrics {
    service
        .metrics()
        .method(gateway, method)
        .cloned()
        .unwrap_or_else(|| panic!("no metrics for {gateway}.{method}"))
}

/// (calls, errors, timeouts, asks_completed) of `gateway`/`method` on `service`.
fn counts(service: &RpcService, gateway: &str, name: &str) -> (u64, u64, u64, u64) {
    let m = method(service, gateway, name);
    (m.calls, m.errors, m.timeouts, m.asks_completed)
}

/// (mailbox_depth, handled, refused) of the endpoint `name` on `service`.
fn mailbox(service: &RpcService, name: &str) -> (u64, u64, u64) {
    let metrics = service.metrics();
    let e = metrics
        .endpoint(name)
        .unwrap_or_else(|| panic!("endpoint {name} not listed in {metrics:?}"));
    (e.mailbox_depth, e.handled, e.refused)
}

#[actix_rt::test]
async fn calls_are_counted_per_method_for_local_and_remote_asks_and_tells() {
    let (a, b) = (service().await, service().await);
    let (server, _) = start_test_endpoint(&a);
    let name = server.address().endpoint().to_string();
    let local = a.connect::<TestEndpoint>(server.address()).await.unwrap();
    let remote = bounded("connect", b.connect::<TestEndpoint>(server.address()))
        .await
        .unwrap();
    assert!(local.is_local() && !remote.is_local());

    for i in 0..3 {
        let reply = bounded("local echo", local.ask(Echo(i.to_string()))).await;
        assert_eq!(reply, Ok(i.to_string()));
    }
    for i in 1..=5 {
        local.tell(Add(i)).unwrap();
    }
    for i in 0..2 {
        let reply = bounded("remote echo", remote.ask(Echo(i.to_string()))).await;
        assert_eq!(reply, Ok(i.to_string()));
    }
    for i in 1..=4 {
        remote.tell(Add(i)).unwrap();
    }
    // Everything before it in the mailbox is handled by the time Total answers.
    assert_eq!(bounded("total", remote.ask(Total)).await, Ok(15 + 10));

    // Each service counts the calls of its own gateways.
    assert_eq!(counts(&a, "TestGateway", "Echo"), (3, 0, 0, 3));
    assert_eq!(counts(&a, "TestGateway", "Add"), (5, 0, 0, 0));
    assert_eq!(counts(&a, "TestGateway", "Total"), (0, 0, 0, 0));
    assert_eq!(counts(&b, "TestGateway", "Echo"), (2, 0, 0, 2));
    assert_eq!(counts(&b, "TestGateway", "Add"), (4, 0, 0, 0));
    assert_eq!(counts(&b, "TestGateway", "Total"), (1, 0, 0, 1));

    // Every method of the protocol is listed, by its type's name, zeros included.
    let listed: Vec<String> = b
        .metrics()
        .methods
        .into_iter()
        .filter(|m| m.gateway == "TestGateway")
        .map(|m| m.method)
        .collect();
    let mut expected: Vec<&str> = TestEndpoint::MESSAGES.to_vec();
    expected.sort_unstable();
    assert_eq!(listed, expected);

    // The endpoint saw all 15 messages, whichever path they took.
    let metrics = a.metrics();
    let endpoint = metrics.endpoint(&name).unwrap();
    assert_eq!(endpoint.gateway, "TestGateway");
    assert_eq!(mailbox(&a, &name), (0, 15, 0));
    assert!(b.metrics().endpoints.is_empty(), "b runs no endpoint");

    bounded("close a", a.close()).await.unwrap();
    bounded("close b", b.close()).await.unwrap();
}

#[actix_rt::test]
async fn calls_forced_through_the_codec_are_counted_too() {
    let a = service_with(RpcConfig {
        force_serialization: true,
        ..RpcConfig::default()
    })
    .await;
    let (server, _) = start_test_endpoint(&a);
    let name = server.address().endpoint().to_string();
    let gw = a.connect::<TestEndpoint>(server.address()).await.unwrap();
    gw.tell(Add(2)).unwrap();
    gw.tell(Add(3)).unwrap();
    assert_eq!(bounded("total", gw.ask(Total)).await, Ok(5));
    assert_eq!(counts(&a, "TestGateway", "Add"), (2, 0, 0, 0));
    assert_eq!(counts(&a, "TestGateway", "Total"), (1, 0, 0, 1));
    assert_eq!(mailbox(&a, &name), (0, 3, 0));
    bounded("close", a.close()).await.unwrap();
}

#[actix_rt::test]
async fn timeouts_and_unreachable_endpoints_are_counted_apart() {
    let (a, b) = (service().await, service().await);
    let (server, _) = start_test_endpoint(&a);
    let local = a.connect::<TestEndpoint>(server.address()).await.unwrap();
    let remote = bounded("connect", b.connect::<TestEndpoint>(server.address()))
        .await
        .unwrap();
    let slow = || SlowEcho {
        ms: 300,
        text: "late".into(),
    };
    let short = Duration::from_millis(20);

    let late = bounded("local slow", local.ask_with_timeout(slow(), short)).await;
    assert!(matches!(late, Err(RpcError::Timeout { .. })), "{late:?}");
    let late = bounded("remote slow", remote.ask_with_timeout(slow(), short)).await;
    assert!(matches!(late, Err(RpcError::Timeout { .. })), "{late:?}");
    assert_eq!(counts(&a, "TestGateway", "SlowEcho"), (1, 0, 1, 0));
    assert_eq!(counts(&b, "TestGateway", "SlowEcho"), (1, 0, 1, 0));

    // The endpoint terminates: asks and tells to it fail, and count as errors.
    bounded("close endpoint", server.close()).await.unwrap();
    let gone = bounded("local echo", local.ask(Echo("x".into()))).await;
    assert!(
        matches!(gone, Err(RpcError::RecipientUnreachable { .. })),
        "{gone:?}"
    );
    assert!(local.tell(Add(1)).is_err());
    let gone = bounded("remote echo", remote.ask(Echo("x".into()))).await;
    assert!(
        matches!(gone, Err(RpcError::RecipientUnreachable { .. })),
        "{gone:?}"
    );
    assert_eq!(counts(&a, "TestGateway", "Echo"), (1, 1, 0, 0));
    assert_eq!(counts(&a, "TestGateway", "Add"), (1, 1, 0, 0));
    assert_eq!(counts(&b, "TestGateway", "Echo"), (1, 1, 0, 0));
    // A terminated endpoint drops out of the list.
    assert!(a.metrics().endpoints.is_empty(), "{:?}", a.metrics());

    bounded("close a", a.close()).await.unwrap();
    bounded("close b", b.close()).await.unwrap();
}

#[actix_rt::test]
async fn fencing_refusals_are_errors_at_the_caller_and_refusals_at_the_endpoint() {
    let (a, b) = (service().await, service().await);
    let token = LeaderId::generate();
    let leader = a.start_server(Leader::new(token)).unwrap();
    leader.start();
    let name = leader.address().endpoint().to_string();
    let stale = LeaderId::generate();
    let local = a
        .connect_fenced::<Leader>(leader.address(), stale)
        .await
        .unwrap();
    let remote = bounded(
        "connect",
        b.connect_fenced::<Leader>(leader.address(), stale),
    )
    .await
    .unwrap();
    let good = bounded(
        "connect",
        b.connect_fenced::<Leader>(leader.address(), token),
    )
    .await
    .unwrap();

    let refused = bounded("local ask", local.ask(WhoLeads)).await;
    assert!(
        matches!(refused, Err(RpcError::FencingTokenMismatch { .. })),
        "{refused:?}"
    );
    let refused = bounded("remote ask", remote.ask(WhoLeads)).await;
    assert!(
        matches!(refused, Err(RpcError::FencingTokenMismatch { .. })),
        "{refused:?}"
    );
    // Tells with the stale token are sent fine, and refused where they arrive.
    local.tell(Note(1)).unwrap();
    remote.tell(Note(2)).unwrap();
    // After both in the mailbox (the remote one on the same connection): none got through.
    assert_eq!(bounded("notes", good.ask(Notes)).await, Ok(vec![]));

    assert_eq!(counts(&a, "LeaderGateway", "WhoLeads"), (1, 1, 0, 0));
    assert_eq!(counts(&a, "LeaderGateway", "Note"), (1, 0, 0, 0));
    assert_eq!(counts(&b, "LeaderGateway", "WhoLeads"), (1, 1, 0, 0));
    assert_eq!(counts(&b, "LeaderGateway", "Note"), (1, 0, 0, 0));
    assert_eq!(counts(&b, "LeaderGateway", "Notes"), (1, 0, 0, 1));
    assert_eq!(mailbox(&a, &name), (0, 1, 4));

    bounded("close a", a.close()).await.unwrap();
    bounded("close b", b.close()).await.unwrap();
}

#[actix_rt::test]
async fn mailbox_depth_counts_what_is_queued_until_it_is_handled() {
    let a = service().await;
    let (server, _) = start_test_endpoint(&a);
    let name = server.address().endpoint().to_string();
    let gw = a.connect::<TestEndpoint>(server.address()).await.unwrap();
    assert_eq!(
        bounded("echo", gw.ask(Echo("up".into()))).await,
        Ok("up".into())
    );
    assert_eq!(mailbox(&a, &name), (0, 1, 0));

    // The endpoint runs on this thread: nothing is handled until the test awaits.
    for _ in 0..100 {
        gw.tell(Add(1)).unwrap();
    }
    server.run_async(|_, _| {});
    assert_eq!(mailbox(&a, &name), (101, 1, 0));

    // Once Total is answered everything before it has been handled (the closure is no RPC
    // message: it leaves the depth but is not counted as handled).
    assert_eq!(bounded("total", gw.ask(Total)).await, Ok(100));
    assert_eq!(mailbox(&a, &name), (0, 102, 0));
    bounded("close", a.close()).await.unwrap();
}

#[actix_rt::test]
async fn a_stopped_endpoint_refuses_and_its_depth_returns_to_zero() {
    let a = service().await;
    let (server, _) = start_test_endpoint(&a);
    let name = server.address().endpoint().to_string();
    let gw = a.connect::<TestEndpoint>(server.address()).await.unwrap();
    assert_eq!(
        bounded("echo", gw.ask(Echo("up".into()))).await,
        Ok("up".into())
    );

    server.stop();
    for _ in 0..5 {
        gw.tell(Add(1)).unwrap();
    }
    let refused = bounded("echo", gw.ask(Echo("down".into()))).await;
    assert!(
        matches!(refused, Err(RpcError::EndpointNotStarted { .. })),
        "{refused:?}"
    );
    assert_eq!(mailbox(&a, &name), (0, 1, 6));
    assert_eq!(counts(&a, "TestGateway", "Echo"), (2, 1, 0, 1));
    assert_eq!(counts(&a, "TestGateway", "Add"), (5, 0, 0, 0));

    // Started again, it serves; terminated, it is gone from the list.
    server.start();
    assert_eq!(bounded("total", gw.ask(Total)).await, Ok(0));
    assert_eq!(mailbox(&a, &name), (0, 2, 6));
    bounded("close endpoint", server.close()).await.unwrap();
    assert!(a.metrics().endpoint(&name).is_none());
    bounded("close", a.close()).await.unwrap();
}

// ---- an endpoint whose handler blocks its main thread ----

/// Blocks the endpoint's thread until the test releases it (at most 30 s).
#[derive(Serialize, Deserialize)]
struct Block;
impl RpcMessage for Block {
    type Reply = ();
}

#[derive(Serialize, Deserialize)]
struct Bump;
impl RpcMessage for Bump {
    type Reply = ();
}

#[derive(Serialize, Deserialize)]
struct Bumps;
impl RpcMessage for Bumps {
    type Reply = u64;
}

struct Blocker {
    gate: mpsc::Receiver<()>,
    blocked: Arc<AtomicBool>,
    bumps: u64,
}

impl RpcEndpoint for Blocker {
    type Token = Unfenced;
    const GATEWAY: &'static str = "BlockerGateway";
    const NAME_PREFIX: &'static str = "blocker";
    fn fencing_token(&self) -> Unfenced {
        Unfenced
    }
}

impl Handler<Block> for Blocker {
    fn handle(&mut self, _: Block, _: &mut RpcContext<'_, Self>) -> Response<Self, ()> {
        self.blocked.store(true, Ordering::SeqCst);
        // Deliberately blocking (the endpoint runs on its own arbiter), bounded.
        let _ = self.gate.recv_timeout(Duration::from_secs(30));
        self.blocked.store(false, Ordering::SeqCst);
        Response::ready(())
    }
}

impl Handler<Bump> for Blocker {
    fn handle(&mut self, _: Bump, _: &mut RpcContext<'_, Self>) -> Response<Self, ()> {
        self.bumps += 1;
        Response::ready(())
    }
}

impl Handler<Bumps> for Blocker {
    fn handle(&mut self, _: Bumps, _: &mut RpcContext<'_, Self>) -> Response<Self, u64> {
        Response::ready(self.bumps)
    }
}

rpc_protocol!(Blocker { Block, Bump, Bumps });

#[actix_rt::test]
async fn a_blocked_endpoint_shows_its_backlog_from_local_and_remote_callers() {
    let (a, b) = (service().await, service().await);
    let arbiter = actix_rt::Arbiter::new();
    let (release, gate) = mpsc::channel();
    let blocked = Arc::new(AtomicBool::new(false));
    let endpoint = Blocker {
        gate,
        blocked: Arc::clone(&blocked),
        bumps: 0,
    };
    let server = a
        .start_server_in(endpoint, None, &arbiter.handle())
        .unwrap();
    server.start();
    let name = server.address().endpoint().to_string();
    let local = a.connect::<Blocker>(server.address()).await.unwrap();
    let remote = bounded("connect", b.connect::<Blocker>(server.address()))
        .await
        .unwrap();

    remote.tell(Block).unwrap();
    eventually("the endpoint blocks", || blocked.load(Ordering::SeqCst)).await;

    // Queued behind the blocked handler: one local tell, a closure, ten remote tells, one ask.
    local.tell(Bump).unwrap();
    server.run_async(|_, _| {});
    for _ in 0..10 {
        remote.tell(Bump).unwrap();
    }
    let asking = {
        let remote = remote.clone();
        actix_rt::spawn(async move { remote.ask(Bumps).await })
    };
    eventually("the backlog shows in the depth", || {
        mailbox(&a, &name) == (13, 1, 0)
    })
    .await;

    release.send(()).unwrap();
    let bumps = bounded("the ask after the backlog", asking).await.unwrap();
    assert_eq!(bumps, Ok(11));
    eventually("the mailbox drains", || mailbox(&a, &name) == (0, 13, 0)).await;
    assert_eq!(counts(&b, "BlockerGateway", "Bump"), (10, 0, 0, 0));
    assert_eq!(counts(&b, "BlockerGateway", "Bumps"), (1, 0, 0, 1));
    assert_eq!(counts(&a, "BlockerGateway", "Bump"), (1, 0, 0, 0));

    bounded("close b", b.close()).await.unwrap();
    bounded("close a", a.close()).await.unwrap();
    arbiter.stop();
}
