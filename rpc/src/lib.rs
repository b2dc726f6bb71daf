//! # rflink-rpc: fenced actor RPC
//!
//! Flink's RPC layer (`RpcEndpoint`, `RpcService`, `RpcGateway`, `FencedRpcEndpoint`,
//! `PekkoRpcActor`) rebuilt on actix and tokio. It knows nothing of jobs, slots or Flink's
//! components: it gives components a mailbox, typed messages, fencing, and a transport.
//!
//! ## The model
//!
//! * An **endpoint** ([`RpcEndpoint`]) is a component's state plus one [`Handler`] per message.
//!   [`RpcService::start_server`] runs it as an actix actor ([`RpcActor`]): every handler,
//!   `run_async`, scheduled closure and `call_async` of one endpoint runs one at a time on its
//!   mailbox, Flink's "main thread". Lifecycle: Stopped → Started → Terminating → Terminated.
//! * Its **messages** form a closed set declared with [`rpc_protocol!`]: serde structs with typed
//!   replies ([`RpcMessage`]). Handler errors travel inside the reply type, typed.
//! * A **gateway** ([`RpcGateway`]) calls an endpoint with `ask` (reply, timeout) or `tell`
//!   (fire-and-forget). It is the same type for an endpoint in this process (no serialization
//!   unless forced) or on another node (TCP, see [`transport`]).
//! * **Fencing**: a fenced endpoint has an immutable token ([`FencingToken`], ids made with
//!   [`define_id!`]); a gateway from [`RpcService::connect_fenced`] stamps it on every message; the
//!   actor checks it in one place before any handler runs.
//! * **Metrics** ([`RpcService::metrics`]): calls per target endpoint type and method as the
//!   callers on a service saw them (sent, errors, timeouts, round-trip time), and each endpoint's
//!   mailbox depth and handled/refused messages; plain atomic counters, no lock on a call's path.
//! * **Failures are loud and typed** ([`RpcError`]): oversized frames fail at the sender, asks to a
//!   terminated endpoint or a dead node fail at once with `RecipientUnreachable`, malformed input
//!   closes only the offending connection.
//!
//! ## Example
//!
//! ```
//! use rflink_rpc::{rpc_protocol, Handler, Response, RpcConfig, RpcContext, RpcEndpoint, RpcMessage, RpcService, Unfenced};
//! use serde::{Deserialize, Serialize};
//!
//! struct Counter { total: u64 }
//!
//! #[derive(Serialize, Deserialize)]
//! struct Add(u64);
//! impl RpcMessage for Add { type Reply = u64; }
//!
//! impl RpcEndpoint for Counter {
//!     type Token = Unfenced;
//!     const GATEWAY: &'static str = "CounterGateway";
//!     const NAME_PREFIX: &'static str = "counter";
//!     fn fencing_token(&self) -> Unfenced { Unfenced }
//! }
//! impl Handler<Add> for Counter {
//!     fn handle(&mut self, Add(n): Add, _ctx: &mut RpcContext<'_, Self>) -> Response<Self, u64> {
//!         self.total += n;
//!         Response::ready(self.total)
//!     }
//! }
//! rpc_protocol!(Counter { Add });
//!
//! actix_rt::System::new().block_on(async {
//!     let service = RpcService::start(RpcConfig::default()).await.unwrap();
//!     let server = service.start_server(Counter { total: 0 }).unwrap();
//!     server.start();
//!     let gateway = service.connect::<Counter>(server.address()).await.unwrap();
//!     assert_eq!(gateway.ask(Add(2)).await.unwrap(), 2);
//!     assert_eq!(gateway.ask(Add(3)).await.unwrap(), 5);
//!     service.close().await.unwrap();
//! });
//! ```

#![warn(missing_docs, clippy::unwrap_used)]

// Lets `define_id!` name this crate as `rflink_rpc` inside it too.
#[allow(unused_extern_crates)]
extern crate self as rflink_rpc;

mod address;
mod config;
mod endpoint;
mod error;
mod gateway;
mod id;
mod message;
mod metrics;
pub mod security;
mod server;
mod service;
pub mod transport;

pub use address::{RpcAddress, SCHEME};
pub use config::{RpcConfig, MAX_FRAME_SIZE, MIN_FRAME_SIZE};
pub use endpoint::{
    EndpointState, LifecycleError, MainThreadHandle, RpcActor, RpcContext, RpcEndpoint,
    ScheduledTask, StopFuture,
};
pub use error::{CodecDirection, HandshakeFailure, RpcError};
pub use gateway::RpcGateway;
pub use id::{AbstractId, FencingToken, ParseIdError, Unfenced};
pub use message::{Accepts, Handler, Response, RpcMessage, RpcProtocol};
pub use metrics::{EndpointMetrics, MethodMetrics, RpcMetrics};
pub use server::RpcServer;
pub use service::RpcService;
pub use transport::{PeerEvent, TransportStats};

/// Items the macros expand to; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::message::MessageVisitor;
    pub use serde;
}
