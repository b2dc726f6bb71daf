//! Test endpoints and helpers shared by the rpc integration tests.
#![allow(dead_code)] // Each test file uses a different part of this module.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rflink_rpc::{
    define_fencing_token, rpc_protocol, Handler, LifecycleError, Response, RpcConfig, RpcContext,
    RpcEndpoint, RpcMessage, RpcService, StopFuture, Unfenced,
};
use serde::{Deserialize, Serialize};

define_fencing_token! {
    /// Fences the test leader endpoint.
    pub struct LeaderId;
}

/// Installs a tracing subscriber that writes through the test harness (once per process).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A service on an ephemeral loopback port, with short timeouts for tests.
pub async fn service() -> RpcService {
    service_with(RpcConfig::default()).await
}

/// A service with exactly `config` (bind 127.0.0.1 port 0 unless it says otherwise).
pub async fn service_with(config: RpcConfig) -> RpcService {
    init_tracing();
    RpcService::start(config)
        .await
        .expect("rpc service starts on an ephemeral port")
}

/// Bounds every test future: a hang fails the test with a message instead of wedging CI.
pub async fn bounded<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(30), fut).await {
        Ok(out) => out,
        Err(_) => panic!("timed out after 30 s waiting for {what}"),
    }
}

/// Polls `check` until it holds, failing with `what` after 10 s.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---- messages ----

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Echo(pub String);
impl RpcMessage for Echo {
    type Reply = String;
}

/// Adds to the counter; a tell.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Add(pub u64);
impl RpcMessage for Add {
    type Reply = ();
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Total;
impl RpcMessage for Total {
    type Reply = u64;
}

/// Replies after `ms` milliseconds, without blocking the mailbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SlowEcho {
    pub ms: u64,
    pub text: String,
}
impl RpcMessage for SlowEcho {
    type Reply = String;
}

/// The endpoint's own error, sent back inside the reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum TestError {
    #[error("refused {0}")]
    Refused(u32),
    #[error("bad input {input:?}")]
    BadInput { input: String },
}

/// Fails with a `TestError`, immediately or from a future.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fail {
    pub code: u32,
    pub asynchronously: bool,
}
impl RpcMessage for Fail {
    type Reply = Result<(), TestError>;
}

/// Asks for a reply of `len` bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Blob(pub usize);
impl RpcMessage for Blob {
    type Reply = serde_bytes_vec::Bytes;
}

/// Carries `len` bytes in.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Upload(pub serde_bytes_vec::Bytes);
impl RpcMessage for Upload {
    type Reply = usize;
}

/// Records entry and exit to prove handlers never overlap.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Critical;
impl RpcMessage for Critical {
    type Reply = ();
}

/// A value whose serialization always fails (Flink: a non-serializable argument).
#[derive(Debug, Clone, Deserialize)]
pub struct Unserializable;
impl Serialize for Unserializable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(
            "Unserializable refuses to be serialized",
        ))
    }
}
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Strange(pub Unserializable);
impl RpcMessage for Strange {
    type Reply = bool;
}

pub mod serde_bytes_vec {
    use serde::{Deserialize, Serialize};
    /// A byte vector encoded as one msgpack `bin`, not an array of numbers.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Bytes(pub Vec<u8>);
    impl Serialize for Bytes {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(&self.0)
        }
    }
    impl<'de> Deserialize<'de> for Bytes {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl serde::de::Visitor<'_> for V {
                type Value = Bytes;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("bytes")
                }
                fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
                    Ok(Bytes(v.to_vec()))
                }
                fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
                    Ok(Bytes(v))
                }
            }
            d.deserialize_byte_buf(V)
        }
    }
}

// ---- the test endpoint ----

/// What the test endpoint observed, shared with the test.
#[derive(Debug, Default)]
pub struct Probe {
    pub started: AtomicUsize,
    pub stopped: AtomicUsize,
    pub adds: AtomicUsize,
    pub in_critical: AtomicUsize,
    pub overlaps: AtomicUsize,
    pub events: Mutex<Vec<String>>,
}

impl Probe {
    pub fn event(&self, e: impl Into<String>) {
        self.events.lock().expect("probe lock").push(e.into());
    }
    pub fn events(&self) -> Vec<String> {
        self.events.lock().expect("probe lock").clone()
    }
}

/// How `on_start` / `on_stop` behave.
#[derive(Debug, Clone, Default)]
pub struct Lifecycle {
    pub fail_start: bool,
    pub fail_stop: bool,
    /// `on_stop` finishes only once this is notified.
    pub stop_gate: Option<Arc<tokio::sync::Notify>>,
}

pub struct TestEndpoint {
    pub probe: Arc<Probe>,
    pub total: u64,
    pub lifecycle: Lifecycle,
}

impl TestEndpoint {
    pub fn new(probe: Arc<Probe>) -> Self {
        TestEndpoint {
            probe,
            total: 0,
            lifecycle: Lifecycle::default(),
        }
    }
}

impl RpcEndpoint for TestEndpoint {
    type Token = Unfenced;
    const GATEWAY: &'static str = "TestGateway";
    const NAME_PREFIX: &'static str = "test";

    fn fencing_token(&self) -> Unfenced {
        Unfenced
    }

    fn on_start(&mut self, ctx: &mut RpcContext<'_, Self>) -> Result<(), LifecycleError> {
        ctx.assert_main_thread();
        self.probe.started.fetch_add(1, Ordering::SeqCst);
        self.probe.event("on_start");
        if self.lifecycle.fail_start {
            return Err("on_start refused".into());
        }
        Ok(())
    }

    fn on_stop(&mut self, ctx: &mut RpcContext<'_, Self>) -> StopFuture {
        ctx.assert_main_thread();
        self.probe.stopped.fetch_add(1, Ordering::SeqCst);
        self.probe.event("on_stop");
        let lifecycle = self.lifecycle.clone();
        let probe = Arc::clone(&self.probe);
        Box::pin(async move {
            if let Some(gate) = lifecycle.stop_gate {
                gate.notified().await;
            }
            probe.event("on_stop done");
            if lifecycle.fail_stop {
                Err("on_stop failed".into())
            } else {
                Ok(())
            }
        })
    }
}

impl Handler<Echo> for TestEndpoint {
    fn handle(&mut self, msg: Echo, ctx: &mut RpcContext<'_, Self>) -> Response<Self, String> {
        ctx.assert_main_thread();
        Response::ready(msg.0)
    }
}

impl Handler<Add> for TestEndpoint {
    fn handle(&mut self, msg: Add, _: &mut RpcContext<'_, Self>) -> Response<Self, ()> {
        self.total += msg.0;
        self.probe.adds.fetch_add(1, Ordering::SeqCst);
        Response::ready(())
    }
}

impl Handler<Total> for TestEndpoint {
    fn handle(&mut self, _: Total, _: &mut RpcContext<'_, Self>) -> Response<Self, u64> {
        Response::ready(self.total)
    }
}

impl Handler<SlowEcho> for TestEndpoint {
    fn handle(&mut self, msg: SlowEcho, _: &mut RpcContext<'_, Self>) -> Response<Self, String> {
        Response::future(async move {
            tokio::time::sleep(Duration::from_millis(msg.ms)).await;
            msg.text
        })
    }
}

impl Handler<Fail> for TestEndpoint {
    fn handle(
        &mut self,
        msg: Fail,
        _: &mut RpcContext<'_, Self>,
    ) -> Response<Self, Result<(), TestError>> {
        if msg.asynchronously {
            Response::then(
                tokio::time::sleep(Duration::from_millis(5)),
                move |(), _, ctx| {
                    ctx.assert_main_thread();
                    Err(TestError::BadInput {
                        input: format!("code {}", msg.code),
                    })
                },
            )
        } else {
            Response::ready(Err(TestError::Refused(msg.code)))
        }
    }
}

impl Handler<Blob> for TestEndpoint {
    fn handle(
        &mut self,
        msg: Blob,
        _: &mut RpcContext<'_, Self>,
    ) -> Response<Self, serde_bytes_vec::Bytes> {
        Response::ready(serde_bytes_vec::Bytes(vec![7; msg.0]))
    }
}

impl Handler<Upload> for TestEndpoint {
    fn handle(&mut self, msg: Upload, _: &mut RpcContext<'_, Self>) -> Response<Self, usize> {
        Response::ready(msg.0 .0.len())
    }
}

impl Handler<Critical> for TestEndpoint {
    fn handle(&mut self, _: Critical, ctx: &mut RpcContext<'_, Self>) -> Response<Self, ()> {
        ctx.assert_main_thread();
        if self.probe.in_critical.fetch_add(1, Ordering::SeqCst) != 0 {
            self.probe.overlaps.fetch_add(1, Ordering::SeqCst);
        }
        // Do a little work while "inside", so an overlap would have a window to show.
        let mut x = 0u64;
        for i in 0..10_000u64 {
            x = x.wrapping_add(std::hint::black_box(i));
        }
        std::hint::black_box(x);
        self.probe.in_critical.fetch_sub(1, Ordering::SeqCst);
        Response::ready(())
    }
}

impl Handler<Strange> for TestEndpoint {
    fn handle(&mut self, _: Strange, _: &mut RpcContext<'_, Self>) -> Response<Self, bool> {
        Response::ready(true)
    }
}

rpc_protocol!(TestEndpoint {
    Echo,
    Add,
    Total,
    SlowEcho,
    Fail,
    Blob,
    Upload,
    Critical,
    Strange
});

// ---- a fenced endpoint ----

pub struct Leader {
    pub token: LeaderId,
    pub notes: Vec<u64>,
}

/// A tell to the fenced endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Note(pub u64);
impl RpcMessage for Note {
    type Reply = ();
}

/// Every note received, in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Notes;
impl RpcMessage for Notes {
    type Reply = Vec<u64>;
}

impl Leader {
    pub fn new(token: LeaderId) -> Self {
        Leader {
            token,
            notes: Vec::new(),
        }
    }
}

impl Handler<Note> for Leader {
    fn handle(&mut self, msg: Note, _: &mut RpcContext<'_, Self>) -> Response<Self, ()> {
        self.notes.push(msg.0);
        Response::ready(())
    }
}

impl Handler<Notes> for Leader {
    fn handle(&mut self, _: Notes, _: &mut RpcContext<'_, Self>) -> Response<Self, Vec<u64>> {
        Response::ready(self.notes.clone())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WhoLeads;
impl RpcMessage for WhoLeads {
    type Reply = String;
}

impl RpcEndpoint for Leader {
    type Token = LeaderId;
    const GATEWAY: &'static str = "LeaderGateway";
    const NAME_PREFIX: &'static str = "leader";

    fn fencing_token(&self) -> LeaderId {
        self.token
    }
}

impl Handler<WhoLeads> for Leader {
    fn handle(&mut self, _: WhoLeads, _: &mut RpcContext<'_, Self>) -> Response<Self, String> {
        Response::ready(self.token.to_string())
    }
}

impl Handler<Echo> for Leader {
    fn handle(&mut self, msg: Echo, _: &mut RpcContext<'_, Self>) -> Response<Self, String> {
        Response::ready(msg.0)
    }
}

rpc_protocol!(Leader {
    WhoLeads,
    Echo,
    Note,
    Notes
});

/// Starts a running `TestEndpoint` on `service`.
pub fn start_test_endpoint(
    service: &RpcService,
) -> (rflink_rpc::RpcServer<TestEndpoint>, Arc<Probe>) {
    let probe = Arc::new(Probe::default());
    let server = service
        .start_server(TestEndpoint::new(Arc::clone(&probe)))
        .expect("test endpoint starts");
    server.start();
    (server, probe)
}
