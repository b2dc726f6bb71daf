//! The rflink side: one endpoint served by an `RpcService` on one OS thread, called through a
//! remote gateway of a second `RpcService` on another OS thread. Each thread runs its own
//! `actix_rt::System` (one single-threaded arbiter), so client and server share nothing but the
//! loopback socket.

use std::future::Future;
use std::time::{Duration, Instant};

use rflink_rpc::{
    rpc_protocol, Handler, Response, RpcAddress, RpcConfig, RpcContext, RpcEndpoint, RpcGateway,
    RpcMessage, RpcService, Unfenced,
};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::Options;
use crate::stats::nanos;
use crate::threads::{self, Worker};
use crate::BoxError;

/// The client yields to its runtime after this many tells, so its connection writer runs while
/// it keeps producing (as an actor sending tells between messages would).
const TELL_BURST: usize = 256;
/// `tell` has no backpressure: the client waits while more than this is queued for writing.
const TELL_QUEUE_HIGH_WATER: u64 = 4 * 1024 * 1024;

/// Bytes serialized as one msgpack `bin` (not an array of numbers), without `serde_bytes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload(pub Vec<u8>);

impl Serialize for Payload {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Payload;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Payload, E> {
                Ok(Payload(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Payload, E> {
                Ok(Payload(v))
            }
        }
        d.deserialize_byte_buf(Visitor)
    }
}

/// Ask: the endpoint answers with the same payload (the ping-pong of the baseline).
#[derive(Debug, Serialize, Deserialize)]
pub struct Ping(pub Payload);
impl RpcMessage for Ping {
    type Reply = Payload;
}

/// Tell: the endpoint counts it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Push(pub Payload);
impl RpcMessage for Push {
    type Reply = ();
}

/// Ask: how many `Push` messages the endpoint has handled.
#[derive(Debug, Serialize, Deserialize)]
pub struct Count;
impl RpcMessage for Count {
    type Reply = u64;
}

/// The benchmark endpoint.
#[derive(Debug, Default)]
pub struct BenchEndpoint {
    pushed: u64,
    checksum: u64,
}

impl RpcEndpoint for BenchEndpoint {
    type Token = Unfenced;
    const GATEWAY: &'static str = "BenchGateway";
    const NAME_PREFIX: &'static str = "bench";

    fn fencing_token(&self) -> Unfenced {
        Unfenced
    }
}

impl Handler<Ping> for BenchEndpoint {
    fn handle(
        &mut self,
        Ping(payload): Ping,
        _: &mut RpcContext<'_, Self>,
    ) -> Response<Self, Payload> {
        Response::ready(payload)
    }
}

impl Handler<Push> for BenchEndpoint {
    fn handle(&mut self, Push(payload): Push, _: &mut RpcContext<'_, Self>) -> Response<Self, ()> {
        // Touch the payload, as the raw baseline does.
        let first = payload.0.first().copied().unwrap_or(0);
        let last = payload.0.last().copied().unwrap_or(0);
        self.checksum = self
            .checksum
            .wrapping_add(u64::from(first) + u64::from(last));
        self.pushed += 1;
        Response::ready(())
    }
}

impl Handler<Count> for BenchEndpoint {
    fn handle(&mut self, _: Count, _: &mut RpcContext<'_, Self>) -> Response<Self, u64> {
        std::hint::black_box(self.checksum);
        Response::ready(self.pushed)
    }
}

rpc_protocol!(BenchEndpoint { Ping, Push, Count });

fn config() -> RpcConfig {
    // Loopback, ephemeral port.
    RpcConfig {
        bind_host: "127.0.0.1".into(),
        bind_port: 0,
        ..RpcConfig::default()
    }
}

/// The serving side: a thread running an actix system with one `BenchEndpoint`. Dropping it
/// stops the service and joins the thread.
struct Server {
    address: RpcAddress,
    stop: Option<oneshot::Sender<()>>,
    worker: Option<Worker<()>>,
}

impl Server {
    fn start() -> Result<Server, BoxError> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<RpcAddress, String>>();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let worker = Worker::spawn("rflink-server", move || {
            actix_rt::System::new().block_on(async move {
                let started = async {
                    let service = RpcService::start(config()).await?;
                    let server = service.start_server(BenchEndpoint::default())?;
                    server.start();
                    Ok::<_, rflink_rpc::RpcError>((service, server))
                }
                .await;
                let (service, server) = match started {
                    Ok(started) => started,
                    Err(err) => {
                        let _ = ready_tx.send(Err(err.to_string()));
                        return Err(err.into());
                    }
                };
                let _ = ready_tx.send(Ok(server.address().clone()));
                // Serve until told to stop, or until the `Server` handle is gone.
                let _ = stop_rx.await;
                service.close().await?;
                Ok(())
            })
        })?;
        match ready_rx.recv() {
            Ok(Ok(address)) => Ok(Server {
                address,
                stop: Some(stop_tx),
                worker: Some(worker),
            }),
            Ok(Err(err)) => Err(format!("starting the rflink server: {err}").into()),
            // The thread ended without a word: join it for its error.
            Err(_) => Err(worker
                .join()
                .err()
                .unwrap_or_else(|| "the rflink server thread ended early".into())),
        }
    }

    fn stop(mut self) -> Result<(), BoxError> {
        self.stop.take();
        match self.worker.take() {
            Some(worker) => worker.join(),
            None => Ok(()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(worker) = self.worker.take() {
            // Already on an error path: the first error is the one reported.
            let _ = worker.join();
        }
    }
}

/// Starts a server thread and a client thread; on the client, `body` runs as a task of the
/// actix system (as an endpoint's future would) with the client service and a remote gateway.
fn round<T, F, Fut>(body: F) -> Result<T, BoxError>
where
    T: Send + 'static,
    F: FnOnce(RpcService, RpcGateway<BenchEndpoint>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, BoxError>> + 'static,
{
    let server = Server::start()?;
    let address = server.address.clone();
    let out = threads::run("rflink-client", move || {
        actix_rt::System::new().block_on(async move {
            let service = RpcService::start(config()).await?;
            let gateway = service.connect::<BenchEndpoint>(&address).await?;
            if gateway.is_local() {
                return Err("the gateway is local; the benchmark needs a remote one".into());
            }
            let out = actix_rt::spawn(body(service.clone(), gateway))
                .await
                .map_err(|e| BoxError::from(format!("client task failed: {e}")));
            service.close().await?;
            out?
        })
    })?;
    server.stop()?;
    Ok(out)
}

/// One latency round: sequential asks, one in flight; the timed ones in nanoseconds.
pub fn ask_round(options: &Options) -> Result<Vec<u64>, BoxError> {
    let options = options.clone();
    round(move |_service, gateway| async move {
        let payload = super::payload(options.payload);
        let mut samples = Vec::with_capacity(options.samples);
        for i in 0..options.warmup + options.samples {
            let msg = Ping(Payload(payload.clone()));
            let start = Instant::now();
            let reply = gateway.ask(msg).await?;
            let elapsed = start.elapsed();
            if reply.0 != payload {
                return Err("the reply differs from the request".into());
            }
            if i >= options.warmup {
                samples.push(nanos(elapsed));
            }
        }
        Ok(samples)
    })
}

/// Sends `count` tells, then asks for the endpoint's count, which it answers only after handling
/// every earlier tell (one connection, one mailbox: order is kept).
async fn tell_batch(
    service: &RpcService,
    gateway: &RpcGateway<BenchEndpoint>,
    payload: &[u8],
    count: usize,
) -> Result<u64, BoxError> {
    for i in 1..=count {
        gateway.tell(Push(Payload(payload.to_vec())))?;
        if i % TELL_BURST == 0 {
            tokio::task::yield_now().await;
            while service.stats().queued_bytes > TELL_QUEUE_HIGH_WATER {
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        }
    }
    Ok(gateway.ask(Count).await?)
}

/// One throughput round: the time from the first of `options.tells` tells until the endpoint has
/// handled them all.
pub fn tell_round(options: &Options) -> Result<Duration, BoxError> {
    let options = options.clone();
    round(move |service, gateway| async move {
        let payload = super::payload(options.payload);
        let warmup = options.tell_warmup();
        let seen = tell_batch(&service, &gateway, &payload, warmup).await?;
        if seen != warmup as u64 {
            return Err(
                format!("the endpoint handled {seen} warm-up tells, expected {warmup}").into(),
            );
        }
        let start = Instant::now();
        let seen = tell_batch(&service, &gateway, &payload, options.tells).await?;
        let elapsed = start.elapsed();
        let expected = (warmup + options.tells) as u64;
        if seen != expected {
            return Err(format!("the endpoint handled {seen} tells, expected {expected}").into());
        }
        Ok(elapsed)
    })
}
