//! The RPC service: starts endpoints, serves them over TCP, connects to endpoints elsewhere.
//! Flink: `RpcService` / `PekkoRpcService`.

use std::any::Any;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use actix::{Actor, Addr};
use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::sync::watch;

use crate::address::{format_node, valid_endpoint_name, RpcAddress};
use crate::config::RpcConfig;
use crate::endpoint::{
    Control, Encoded, EncodedBatch, EncodedInvocation, EndpointMeta, RpcActor, RpcEndpoint,
};
use crate::error::{HandshakeFailure, RpcError};
use crate::gateway::RpcGateway;
use crate::id::AbstractId;
use crate::metrics::{EndpointCounters, MethodRegistry, MethodTable, Queued, RpcMetrics};
use crate::server::RpcServer;
use crate::transport::connection::SendFailure;
use crate::transport::{Transport, TransportStats};

/// A running endpoint as the transport sees it: typed only by its gateway name.
pub(crate) trait Registered: Send + Sync {
    fn gateway(&self) -> &'static str;
    fn serial(&self) -> u64;
    /// Queues an encoded invocation; if the endpoint is gone, the dropped sink answers for it.
    fn invoke(&self, inv: EncodedInvocation);
    /// Queues encoded invocations as one mailbox item, in order.
    fn invoke_batch(&self, batch: Vec<Encoded>);
    /// False once the endpoint's actor has stopped.
    fn is_alive(&self) -> bool;
    /// The endpoint's mailbox counters.
    fn counters(&self) -> &EndpointCounters;
    fn terminate(&self) -> BoxFuture<'static, Result<(), RpcError>>;
    fn as_any(&self) -> &dyn Any;
}

pub(crate) struct Entry<E: RpcEndpoint> {
    pub(crate) addr: Addr<RpcActor<E>>,
    pub(crate) counters: Arc<EndpointCounters>,
    serial: u64,
    termination: watch::Receiver<Option<Result<(), RpcError>>>,
    name: String,
}

impl<E: RpcEndpoint> Registered for Entry<E> {
    fn gateway(&self) -> &'static str {
        E::GATEWAY
    }

    fn serial(&self) -> u64 {
        self.serial
    }

    fn invoke(&self, inv: EncodedInvocation) {
        self.addr.do_send(Queued::new(inv, &self.counters, 1));
    }

    fn invoke_batch(&self, batch: Vec<Encoded>) {
        let messages = batch
            .iter()
            .map(|item| match item {
                Encoded::One(_) => 1,
                Encoded::Tells(tells) => tells.count,
            })
            .sum();
        self.addr
            .do_send(Queued::new(EncodedBatch(batch), &self.counters, messages));
    }

    fn is_alive(&self) -> bool {
        self.addr.connected()
    }

    fn counters(&self) -> &EndpointCounters {
        &self.counters
    }

    fn terminate(&self) -> BoxFuture<'static, Result<(), RpcError>> {
        self.addr.do_send(Control::Terminate);
        termination_future(self.termination.clone(), self.name.clone()).boxed()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

type TerminationRx = watch::Receiver<Option<Result<(), RpcError>>>;

/// An endpoint ready to start, with what its registration needs.
struct Prepared<E: RpcEndpoint> {
    actor: RpcActor<E>,
    address: RpcAddress,
    termination: TerminationRx,
    serial: u64,
    counters: Arc<EndpointCounters>,
    methods: Arc<MethodTable>,
}

/// What registering a prepared endpoint needs, once its actor is split off to be started.
struct Registration {
    address: RpcAddress,
    termination: TerminationRx,
    serial: u64,
    counters: Arc<EndpointCounters>,
    methods: Arc<MethodTable>,
}

impl<E: RpcEndpoint> Prepared<E> {
    fn split(self) -> (RpcActor<E>, Registration) {
        let Prepared {
            actor,
            address,
            termination,
            serial,
            counters,
            methods,
        } = self;
        let registration = Registration {
            address,
            termination,
            serial,
            counters,
            methods,
        };
        (actor, registration)
    }
}

pub(crate) async fn termination_future(
    mut rx: watch::Receiver<Option<Result<(), RpcError>>>,
    endpoint: String,
) -> Result<(), RpcError> {
    match rx.wait_for(Option::is_some).await {
        Ok(result) => result.clone().unwrap_or(Ok(())),
        Err(_) => Err(RpcError::TerminatedAbnormally { endpoint }),
    }
}

/// Endpoints served by one service, by name.
#[derive(Default)]
pub(crate) struct Registry {
    endpoints: RwLock<HashMap<String, Arc<dyn Registered>>>,
}

impl Registry {
    pub(crate) fn get(&self, name: &str) -> Option<Arc<dyn Registered>> {
        self.endpoints
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// Every endpoint's counts, sorted by name.
    fn metrics(&self) -> Vec<crate::metrics::EndpointMetrics> {
        let mut out: Vec<_> = self
            .endpoints
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(name, entry)| entry.counters().snapshot(name, entry.gateway()))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    fn all(&self) -> Vec<Arc<dyn Registered>> {
        self.endpoints
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    fn insert(&self, name: &str, entry: Arc<dyn Registered>) -> Result<(), RpcError> {
        let mut map = self.endpoints.write().unwrap_or_else(|p| p.into_inner());
        if map.contains_key(name) {
            return Err(RpcError::EndpointAlreadyExists {
                endpoint: name.into(),
            });
        }
        map.insert(name.to_string(), entry);
        Ok(())
    }

    fn remove(&self, name: &str, serial: u64) {
        let mut map = self.endpoints.write().unwrap_or_else(|p| p.into_inner());
        if map.get(name).is_some_and(|e| e.serial() == serial) {
            map.remove(name);
        }
    }
}

pub(crate) struct ServiceInner {
    pub(crate) config: RpcConfig,
    pub(crate) transport: Arc<Transport>,
    registry: Arc<Registry>,
    /// Call counters of the gateways made by this service, per endpoint type.
    pub(crate) methods: MethodRegistry,
    counters: Mutex<HashMap<&'static str, u64>>,
    next_serial: AtomicU64,
    local_addr: SocketAddr,
}

impl ServiceInner {
    pub(crate) fn deregister(&self, name: &str, serial: u64) {
        self.registry.remove(name, serial);
    }
}

/// One RPC service: a TCP listener, the endpoints it serves, and connections to other services.
///
/// Cheap to clone. Endpoints must be started from inside an actix system (`actix_rt::System`,
/// `#[actix_rt::test]`); they run on the arbiter that starts them unless
/// [`start_server_in`](Self::start_server_in) names another.
#[derive(Clone)]
pub struct RpcService {
    inner: Arc<ServiceInner>,
}

impl std::fmt::Debug for RpcService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcService")
            .field("address", &self.inner.transport.advertised)
            .finish_non_exhaustive()
    }
}

impl RpcService {
    /// Validates `config`, binds the listener and starts accepting connections.
    pub async fn start(config: RpcConfig) -> Result<Self, RpcError> {
        config.validate()?;
        let bind = format_node(&config.bind_host, config.bind_port);
        let listener = tokio::net::TcpListener::bind(&bind)
            .await
            .map_err(|e| RpcError::Io {
                action: format!("binding the rpc listener to {bind}"),
                detail: e.to_string(),
            })?;
        let local_addr = listener.local_addr().map_err(|e| RpcError::Io {
            action: "reading the bound rpc address".into(),
            detail: e.to_string(),
        })?;
        let host = config
            .advertised_host
            .clone()
            .unwrap_or_else(|| config.bind_host.clone());
        let port = config.advertised_port.unwrap_or(local_addr.port());
        let advertised = format_node(&host, port);
        let registry = Arc::new(Registry::default());
        let transport = Transport::new(
            AbstractId::generate(),
            advertised.clone(),
            config.cluster_id.clone(),
            config.max_frame_size,
            config.connect_timeout,
            config.max_inbound_in_flight,
            config.security.clone(),
            Arc::clone(&registry),
        );
        transport.spawn_listener(listener);
        tracing::info!(bind = %local_addr, advertised, "rpc service started");
        Ok(RpcService {
            inner: Arc::new(ServiceInner {
                config,
                transport,
                registry,
                methods: MethodRegistry::default(),
                counters: Mutex::new(HashMap::new()),
                next_serial: AtomicU64::new(1),
                local_addr,
            }),
        })
    }

    pub(crate) fn from_inner(inner: Arc<ServiceInner>) -> Self {
        RpcService { inner }
    }

    /// The advertised `host:port` of this service.
    pub fn address(&self) -> &str {
        &self.inner.transport.advertised
    }

    /// The port the listener is bound to (the real one when 0 was asked for).
    pub fn port(&self) -> u16 {
        self.inner.local_addr.port()
    }

    /// The socket address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// The configuration this service runs with.
    pub fn config(&self) -> &RpcConfig {
        &self.inner.config
    }

    /// Transport counters.
    pub fn stats(&self) -> TransportStats {
        self.inner.transport.stats()
    }

    /// What this service's RPC traffic looked like so far: calls made through its gateways, per
    /// target endpoint type and method, and the mailboxes of the endpoints it runs. See
    /// [`RpcMetrics`] for what each number counts. Reading takes two short locks (the endpoint
    /// registry and the table of endpoint types), none of which a call takes.
    pub fn metrics(&self) -> RpcMetrics {
        RpcMetrics {
            methods: self.inner.methods.snapshot(),
            endpoints: self.inner.registry.metrics(),
        }
    }

    /// Events about peer connections from now on (a bounded channel: a receiver that falls more
    /// than 256 events behind skips the oldest and learns how many it missed).
    pub fn peer_events(&self) -> tokio::sync::broadcast::Receiver<crate::transport::PeerEvent> {
        self.inner.transport.subscribe()
    }

    fn next_name(&self, prefix: &'static str) -> String {
        let mut counters = self
            .inner
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let n = counters.entry(prefix).or_insert(0);
        let name = format!("{prefix}_{n}");
        *n += 1;
        name
    }

    fn prepare<E: RpcEndpoint>(
        &self,
        endpoint: E,
        name: Option<&str>,
    ) -> Result<Prepared<E>, RpcError> {
        if self.inner.transport.is_shut_down() {
            return Err(RpcError::ServiceShutdown);
        }
        let name = match name {
            Some(name) if valid_endpoint_name(name) => name.to_string(),
            Some(name) => {
                return Err(RpcError::InvalidAddress {
                    address: name.into(),
                    reason: "the endpoint name must be 1 to 255 characters of [A-Za-z0-9_.-]"
                        .into(),
                })
            }
            None => self.next_name(E::NAME_PREFIX),
        };
        if self.inner.registry.get(&name).is_some() {
            return Err(RpcError::EndpointAlreadyExists { endpoint: name });
        }
        let host = self
            .inner
            .config
            .advertised_host
            .clone()
            .unwrap_or_else(|| self.inner.config.bind_host.clone());
        let port = self
            .inner
            .config
            .advertised_port
            .unwrap_or(self.inner.local_addr.port());
        let address = RpcAddress::new(host, port, name)?;
        let (tx, termination) = watch::channel(None);
        let serial = self.inner.next_serial.fetch_add(1, Ordering::Relaxed);
        let counters = Arc::new(EndpointCounters::default());
        let methods = self.inner.methods.table::<E>();
        let meta = EndpointMeta {
            address: address.clone(),
            token: endpoint.fencing_token(),
            service: Arc::downgrade(&self.inner),
            serial,
            main_thread: None,
            counters: Arc::clone(&counters),
            methods: Arc::clone(&methods),
        };
        let actor = RpcActor::new(endpoint, meta, tx, self.inner.config.mailbox_capacity);
        Ok(Prepared {
            actor,
            address,
            termination,
            serial,
            counters,
            methods,
        })
    }

    fn register<E: RpcEndpoint>(
        &self,
        addr: Addr<RpcActor<E>>,
        prepared: Registration,
        token: E::Token,
    ) -> Result<RpcServer<E>, RpcError> {
        let Registration {
            address,
            termination,
            serial,
            counters,
            methods,
        } = prepared;
        let entry = Entry {
            addr: addr.clone(),
            counters: Arc::clone(&counters),
            serial,
            termination: termination.clone(),
            name: address.to_string(),
        };
        if let Err(err) = self
            .inner
            .registry
            .insert(address.endpoint(), Arc::new(entry))
        {
            addr.do_send(Control::Terminate);
            return Err(err);
        }
        Ok(RpcServer::new(
            addr,
            address,
            token,
            termination,
            Arc::downgrade(&self.inner),
            counters,
            methods,
        ))
    }

    /// Starts `endpoint` as an actor on the current arbiter, named `<NAME_PREFIX>_<n>`, in state
    /// Stopped: call [`RpcServer::start`] to let it serve. Flink: `startServer`.
    pub fn start_server<E: RpcEndpoint>(&self, endpoint: E) -> Result<RpcServer<E>, RpcError> {
        self.start_server_named(endpoint, None)
    }

    /// Like [`start_server`](Self::start_server) with a chosen name (`None`: a generated one).
    pub fn start_server_named<E: RpcEndpoint>(
        &self,
        endpoint: E,
        name: Option<&str>,
    ) -> Result<RpcServer<E>, RpcError> {
        let token = endpoint.fencing_token();
        let (actor, registration) = self.prepare(endpoint, name)?.split();
        let addr = actor.start();
        self.register(addr, registration, token)
    }

    /// Like [`start_server_named`](Self::start_server_named), running the actor on `arbiter`
    /// (its own thread), so it neither slows nor is slowed by actors elsewhere.
    pub fn start_server_in<E: RpcEndpoint + Send>(
        &self,
        endpoint: E,
        name: Option<&str>,
        arbiter: &actix::ArbiterHandle,
    ) -> Result<RpcServer<E>, RpcError> {
        let token = endpoint.fencing_token();
        let (actor, registration) = self.prepare(endpoint, name)?.split();
        let addr = RpcActor::start_in_arbiter(arbiter, move |_| actor);
        self.register(addr, registration, token)
    }

    /// Connects to the endpoint at `address` as a gateway of type `E`, without a fencing token.
    /// Flink: `connect(address, Class)`. Fails with `EndpointNotFound` if nothing of that name
    /// is served there, `Handshake` if it is not an `E`, `Connection` if the node is unreachable.
    pub async fn connect<E: RpcEndpoint>(
        &self,
        address: &RpcAddress,
    ) -> Result<RpcGateway<E>, RpcError> {
        self.connect_inner(address, None).await
    }

    /// Connects with a fencing token that the gateway stamps on every message.
    /// Flink: `connect(address, fencingToken, Class)`.
    pub async fn connect_fenced<E: RpcEndpoint>(
        &self,
        address: &RpcAddress,
        token: E::Token,
    ) -> Result<RpcGateway<E>, RpcError> {
        self.connect_inner(address, Some(token)).await
    }

    async fn connect_inner<E: RpcEndpoint>(
        &self,
        address: &RpcAddress,
        token: Option<E::Token>,
    ) -> Result<RpcGateway<E>, RpcError> {
        if self.inner.transport.is_shut_down() {
            return Err(RpcError::ServiceShutdown);
        }
        let node = address.node();
        if node == self.address() {
            let entry = self.inner.registry.get(address.endpoint()).ok_or_else(|| {
                RpcError::EndpointNotFound {
                    address: node.clone(),
                    endpoint: address.endpoint().into(),
                }
            })?;
            let wrong = || RpcError::Handshake {
                peer: node.clone(),
                failure: HandshakeFailure::WrongGateway {
                    endpoint: address.endpoint().into(),
                    requested: E::GATEWAY.into(),
                    actual: entry.gateway().into(),
                },
            };
            if entry.gateway() != E::GATEWAY {
                return Err(wrong());
            }
            let typed = entry
                .as_any()
                .downcast_ref::<Entry<E>>()
                .ok_or_else(wrong)?;
            return Ok(RpcGateway::local(
                typed.addr.clone(),
                Arc::clone(&typed.counters),
                address.clone(),
                token,
                Arc::downgrade(&self.inner),
                self.inner.methods.table::<E>(),
            ));
        }
        let transport = &self.inner.transport;
        let timeout = self.inner.config.ask_timeout;
        for _ in 0..3 {
            let conn = transport.connection(&node).await?;
            let (id, rx) = match conn.resolve(address.endpoint(), E::GATEWAY, transport.max_frame) {
                Ok(pending) => pending,
                Err(SendFailure::Draining) => continue,
                Err(SendFailure::Encode(err)) => return Err(err),
                Err(SendFailure::Closed(err)) => return Err(err),
            };
            return match tokio::time::timeout(timeout, rx).await {
                Err(_) => {
                    conn.forget(id);
                    Err(RpcError::Timeout {
                        recipient: address.to_string(),
                        message: "connect".into(),
                        timeout,
                    })
                }
                Ok(Err(_)) => Err(RpcError::Connection {
                    address: node,
                    reason: "the connection closed during connect".into(),
                }),
                Ok(Ok(Err(err))) => Err(err),
                Ok(Ok(Ok(_))) => Ok(RpcGateway::remote(
                    Arc::clone(transport),
                    address.clone(),
                    token,
                    &self.inner.config,
                    self.inner.methods.table::<E>(),
                )),
            };
        }
        Err(RpcError::Connection {
            address: node,
            reason: "every pooled connection was draining".into(),
        })
    }

    /// Terminates every endpoint (each runs its `on_stop`), then closes the listener and every
    /// connection. Returns the first endpoint failure, if any. Flink: `closeAsync`.
    pub async fn close(&self) -> Result<(), RpcError> {
        let terminations: Vec<_> = self
            .inner
            .registry
            .all()
            .iter()
            .map(|e| e.terminate())
            .collect();
        let results = futures::future::join_all(terminations).await;
        self.inner.transport.shutdown();
        tracing::info!(address = self.address(), "rpc service closed");
        results
            .into_iter()
            .collect::<Result<Vec<()>, RpcError>>()
            .map(|_| ())
    }
}
