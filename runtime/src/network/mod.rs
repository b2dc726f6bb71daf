//! The data plane: moving records between tasks, inside a TaskExecutor and between
//! TaskExecutors. Flink: the `io.network` package (`NettyShuffleEnvironment` and its parts).
//!
//! ## Shape
//!
//! One [`ShuffleEnvironment`] per TaskExecutor owns:
//!
//! * a **data server** on its own TCP port (separate from RPC) serving this process's
//!   subpartitions to remote consumers ([`server`]);
//! * a **connection manager**: one TCP connection per remote data address, shared by every
//!   remote channel of every task ([`client`]);
//! * the global **NetworkBufferPool** every buffer is counted against ([`buffer`]);
//! * the **ResultPartitionManager** where producers register their partitions ([`partition`]).
//!
//! Its I/O runs on one thread, `rflink-data-io`, with its own tokio runtime. Task threads are
//! plain OS threads: a [`ResultPartitionWriter`] blocks (on a condvar) while its pool is empty,
//! which is backpressure, and an [`InputGate`] blocks until a channel has data. Both wake on an
//! [`Interrupter`] for cancellation.
//!
//! ## Paths
//!
//! * **Local** (producer and consumer in one environment): the consumer's channel reads the
//!   producer's subpartition queue directly; buffers and typed batches move by pointer. The
//!   producer signals the gate when data arrives. Backpressure comes from the producer's
//!   LocalBufferPool (min `n + 1`, max `n * buffers_per_channel + floating_buffers_per_gate`,
//!   at most `max_buffers_per_channel` per subpartition).
//! * **Remote**: the wire protocol of [`protocol`] with **credit-based flow control**: a data
//!   buffer is sent only against credit (one per receiver buffer), events travel free, every
//!   buffer carries the sender's backlog, for which the receiver borrows floating buffers and
//!   announces them with AddCredit. See [`gate`] for the receiver side.
//!
//! Events ([`NetworkEvent`]: checkpoint barriers, end of data, end of partition) travel in-band
//! with the data, in the same queues, so an event never overtakes the records written before it
//! ([`ResultPartitionWriter::broadcast_event`] flushes first); they need no credit.
//!
//! ## Barrier alignment
//!
//! A consumer aligning checkpoint barriers blocks the channels that delivered the barrier
//! ([`InputGate::block_channel`], Flink's `blockConsumption`): their items stay queued in order
//! and are not returned until [`InputGate::resume_all`]. A blocked local channel's subpartition
//! is not read, so its producer's pool fills up; a blocked remote channel keeps the buffers it
//! received (and gets no floating buffers), so its credit runs out and the sender stops: in
//! both cases the producer is backpressured while the other channels keep flowing. A
//! [`GateWaker`] wakes a task blocked in [`InputGate::next`] for a message from its
//! TaskExecutor ([`GateItem::Woken`]).
//!
//! ## Security
//!
//! Every data connection runs the security handshake of `rflink_rpc::security` (channel `Data`,
//! settings in [`NetworkConfig::security`], the same on every TaskExecutor) before the data
//! protocol's preamble: the data server accepts through it, the connection manager dials
//! through it. It proves the cluster secret (HMAC challenge-response over fresh nonces from
//! both sides, no replay) and/or runs mutual TLS with the cluster CA. A peer that fails it is
//! refused by the server with one `warn` line, counted
//! ([`ShuffleEnvironment::refused_connections`]) and closed before it can request a partition;
//! the server keeps serving everyone else. On the consumer side the refusal fails every channel
//! of that connection with [`NetworkError::Connection`] naming the security reason, so the task
//! fails cleanly. Both write loops flush after each batch (TLS may keep bytes until a flush).
//! Plain TCP connections split into lock-free halves as before; TLS halves share the session
//! through a lock taken per poll, uncontended on the single I/O thread.
//!
//! ## Failure
//!
//! Malformed input from a peer fails only the channels of that connection, with an error naming
//! the peer, logged at `warn`; the server keeps serving everyone else. A consumer asking for a
//! partition not registered yet retries with backoff (`request_backoff_initial`, doubling to
//! `request_backoff_max`) and then fails its gate with [`NetworkError::PartitionNotFound`].

#![warn(missing_docs)]

mod buffer;
mod client;
mod deserializer;
mod error;
mod gate;
mod partition;
mod protocol;
mod server;

use rflink_rpc::security::TransportSecurity;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tracing::{debug, info};

pub use buffer::{BufferStats, Interrupter};
pub use deserializer::{FeedError, RecordDeserializer, DEFAULT_MAX_RECORD_LEN};
pub use error::NetworkError;
pub use gate::{
    ChannelMetrics, GateItem, GateStats, GateStatsHandle, GateWaker, InputGate, NetBuffer,
    TypedBatch,
};
pub use partition::{PartitionStats, PartitionStatsHandle, ResultPartitionWriter};

use buffer::{lock, LocalBufferPool, NetworkBufferPool};
use client::ConnectionManager;
use gate::{ChannelSetup, GateContext};
use partition::ResultPartitionManager;

use crate::types::ExecutionAttemptId;

/// Settings of the data plane (`taskmanager.network.*`, `taskmanager.memory.segment-size`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// Bytes per network buffer (`taskmanager.memory.segment-size`). Default 32 KiB. Must be
    /// the same on every TaskExecutor of a cluster.
    pub segment_size: usize,
    /// Network buffers of the whole environment (`taskmanager.network.numberOfBuffers`).
    /// Default 2048.
    pub total_buffers: usize,
    /// Exclusive buffers (initial credit) per remote input channel
    /// (`taskmanager.network.memory.buffers-per-channel`). Default 2.
    pub buffers_per_channel: usize,
    /// Floating buffers per input gate (`taskmanager.network.memory.floating-buffers-per-gate`).
    /// Default 8.
    pub floating_buffers_per_gate: usize,
    /// Most buffers one subpartition may hold before its producer blocks
    /// (`taskmanager.network.memory.max-buffers-per-channel`). Default 10.
    pub max_buffers_per_channel: usize,
    /// Records per typed batch handed to a local consumer. Default 1024.
    pub local_batch_records: usize,
    /// First wait before re-requesting a partition that was not found
    /// (`taskmanager.network.request-backoff.initial`). Default 100 ms.
    pub request_backoff_initial: Duration,
    /// Longest wait; after it the request fails (`taskmanager.network.request-backoff.max`).
    /// Default 10 s.
    pub request_backoff_max: Duration,
    /// Longest time a record may wait in a partly filled buffer or batch while its task is busy
    /// (`execution.buffer-timeout.interval`, Flink's output flusher). Default 100 ms. A task
    /// also flushes whenever it has nothing to read.
    pub buffer_timeout: Duration,
    /// How data connections are secured (`security.cluster-secret`, `security.ssl.internal.*`),
    /// by the data server and by input channels dialing other TaskManagers. Default plaintext.
    pub security: TransportSecurity,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            segment_size: 32 * 1024,
            total_buffers: 2048,
            buffers_per_channel: 2,
            floating_buffers_per_gate: 8,
            max_buffers_per_channel: 10,
            local_batch_records: 1024,
            request_backoff_initial: Duration::from_millis(100),
            request_backoff_max: Duration::from_secs(10),
            buffer_timeout: Duration::from_millis(100),
            security: TransportSecurity::default(),
        }
    }
}

impl NetworkConfig {
    /// Checks every value, reporting all problems at once as [`NetworkError::InvalidConfig`].
    pub fn validate(&self) -> Result<(), NetworkError> {
        let mut problems = Vec::new();
        if self.segment_size < 64 || self.segment_size > 16 << 20 {
            problems.push(format!(
                "segment size {} must be between 64 bytes and 16 MiB",
                self.segment_size
            ));
        }
        if self.total_buffers == 0 {
            problems.push("total buffers must be at least 1".to_string());
        }
        if self.buffers_per_channel == 0 {
            problems.push("buffers per channel must be at least 1".to_string());
        }
        if self.max_buffers_per_channel == 0 {
            problems.push("max buffers per channel must be at least 1".to_string());
        }
        if self.local_batch_records == 0 {
            problems.push("local batch records must be at least 1".to_string());
        }
        if self.request_backoff_initial.is_zero() {
            problems.push("request backoff initial must be positive".to_string());
        }
        if self.buffer_timeout.is_zero() {
            problems.push("buffer timeout must be positive".to_string());
        }
        if self.request_backoff_max < self.request_backoff_initial {
            problems.push("request backoff max must be at least the initial backoff".to_string());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(NetworkError::InvalidConfig {
                detail: problems.join("; "),
            })
        }
    }
}

/// Identifies one produced result partition: the producing attempt and which of its results.
/// Flink: `ResultPartitionID` (partition id + producer `ExecutionAttemptID`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct ResultPartitionId {
    /// The producing execution attempt.
    pub producer: ExecutionAttemptId,
    /// Which of the producer's results (its output edge position).
    pub result_index: u32,
}

impl fmt::Display for ResultPartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.producer, self.result_index)
    }
}

/// An event travelling in-band with the data of a subpartition; needs no credit. Flink:
/// `AbstractEvent` subclasses sent through `EventSerializer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NetworkEvent {
    /// The producer finished: nothing follows. Flink: `EndOfPartitionEvent`.
    EndOfPartition,
    /// No more records follow on this channel; checkpoint barriers may still come, and
    /// `EndOfPartition` comes last. Flink: `EndOfData` (sent before the final checkpoint of a
    /// finishing task).
    EndOfData,
    /// A checkpoint barrier: every record before it belongs to checkpoint `id`, every record
    /// after it to a later one. Flink: `CheckpointBarrier` (its `CheckpointOptions` reduced to
    /// whether it is a savepoint).
    CheckpointBarrier {
        /// The checkpoint's id.
        id: u64,
        /// When the checkpoint was triggered, milliseconds since the epoch.
        timestamp: i64,
        /// Whether the checkpoint is a savepoint.
        savepoint: bool,
    },
    /// The producer's watermark: no record with a timestamp at or below it follows. Flink:
    /// `Watermark` (a stream element in Flink, an event here; it travels in order with the
    /// records all the same).
    Watermark(i64),
    /// The producer turned idle (`true`: do not wait for its watermark) or active again.
    /// Flink: `WatermarkStatus`.
    WatermarkStatus {
        /// True for idle.
        idle: bool,
    },
}

/// Where an input channel's producer runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelLocation {
    /// In this ShuffleEnvironment. Flink: `LocalInputChannel`.
    Local,
    /// Behind another data server. Flink: `RemoteInputChannel`.
    Remote {
        /// `host:port` of the producer's data server.
        address: String,
    },
}

/// One input channel of a gate: which subpartition of which partition, and where. Flink: an
/// `InputGateDeploymentDescriptor` entry with its `ShuffleDescriptor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputChannelSpec {
    /// The consumed partition.
    pub partition: ResultPartitionId,
    /// The consumed subpartition (this consumer's subtask index, or 0 for a broadcast).
    pub subpartition: u32,
    /// Where its producer runs.
    pub location: ChannelLocation,
}

struct IoThread {
    stop: oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

struct EnvInner {
    config: NetworkConfig,
    data_address: String,
    port: u16,
    global: Arc<NetworkBufferPool>,
    manager: Arc<ResultPartitionManager>,
    connections: Arc<ConnectionManager>,
    handle: Handle,
    next_channel_id: AtomicU64,
    shut_down: AtomicBool,
    io: Mutex<Option<IoThread>>,
}

impl EnvInner {
    fn shutdown(&self) {
        self.shut_down.store(true, Ordering::Release);
        let Some(io) = lock(&self.io).take() else {
            return;
        };
        let _ = io.stop.send(());
        if io.thread.thread().id() != std::thread::current().id() {
            let _ = io.thread.join();
        }
        info!(address = %self.data_address, "data plane stopped");
    }
}

impl Drop for EnvInner {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The data plane of one TaskExecutor. Flink: `NettyShuffleEnvironment`.
///
/// Cheap to clone; the I/O thread and data server stop on [`shutdown`](Self::shutdown) or when
/// the last clone is dropped. Partitions and gates it created keep working for local data after
/// shutdown, but remote channels fail.
#[derive(Clone)]
pub struct ShuffleEnvironment {
    inner: Arc<EnvInner>,
}

impl fmt::Debug for ShuffleEnvironment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShuffleEnvironment")
            .field("data_address", &self.inner.data_address)
            .field("buffers", &self.inner.global.stats())
            .finish_non_exhaustive()
    }
}

impl ShuffleEnvironment {
    /// Validates `config`, binds the data server on `bind_host:port` (0 = a free port) and
    /// starts the I/O thread. Consumers elsewhere reach it at `advertised_host:<port>`.
    pub fn start(
        config: NetworkConfig,
        bind_host: &str,
        advertised_host: &str,
        port: u16,
    ) -> Result<ShuffleEnvironment, NetworkError> {
        Self::start_advertised(config, bind_host, advertised_host, port, None)
    }

    /// [`start`](Self::start), advertising `advertised_port` instead of the bound port when
    /// given (consumers reach this server through a proxy or NAT on another port).
    pub fn start_advertised(
        config: NetworkConfig,
        bind_host: &str,
        advertised_host: &str,
        port: u16,
        advertised_port: Option<u16>,
    ) -> Result<ShuffleEnvironment, NetworkError> {
        config.validate()?;
        let bind = format!("{bind_host}:{port}");
        let startup = |detail: String| NetworkError::Startup {
            address: bind.clone(),
            detail,
        };
        let listener = std::net::TcpListener::bind(&bind).map_err(|e| startup(e.to_string()))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| startup(e.to_string()))?;
        let port = listener
            .local_addr()
            .map_err(|e| startup(e.to_string()))?
            .port();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("rflink-data-io")
            .build()
            .map_err(|e| startup(e.to_string()))?;
        let handle = runtime.handle().clone();
        let global = Arc::new(NetworkBufferPool::new(
            config.total_buffers,
            config.segment_size,
        ));
        let manager = Arc::new(ResultPartitionManager::default());
        let connections =
            ConnectionManager::new(handle.clone(), config.segment_size, config.security.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let server_manager = Arc::clone(&manager);
        let segment_size = config.segment_size;
        let security = config.security.clone();
        // Moved into the thread; if spawning fails it is shut down without blocking (start may
        // be called inside an async context, where dropping a runtime panics).
        let mut runtime = Some(runtime);
        let thread = std::thread::Builder::new()
            .name("rflink-data-io".into())
            .spawn({
                let runtime = runtime.take();
                move || {
                    let Some(runtime) = runtime else { return };
                    runtime.block_on(async move {
                        match tokio::net::TcpListener::from_std(listener) {
                            Ok(listener) => {
                                let server =
                                    server::serve(listener, server_manager, segment_size, security);
                                tokio::select! {
                                    () = server => {}
                                    _ = stopped => {}
                                }
                            }
                            Err(err) => {
                                tracing::error!(error = %err, "data server cannot listen");
                                let _ = stopped.await;
                            }
                        }
                    });
                    drop(runtime);
                }
            })
            .map_err(|e| startup(format!("cannot start the I/O thread: {e}")))?;
        if let Some(runtime) = runtime {
            runtime.shutdown_background();
        }
        let data_address = format!("{advertised_host}:{}", advertised_port.unwrap_or(port));
        info!(
            address = %data_address,
            bound = port,
            security = config.security.describe(),
            "data plane started"
        );
        Ok(ShuffleEnvironment {
            inner: Arc::new(EnvInner {
                config,
                data_address,
                port,
                global,
                manager,
                connections,
                handle,
                next_channel_id: AtomicU64::new(0),
                shut_down: AtomicBool::new(false),
                io: Mutex::new(Some(IoThread { stop, thread })),
            }),
        })
    }

    /// `host:port` where other TaskExecutors reach this data server.
    pub fn data_address(&self) -> String {
        self.inner.data_address.clone()
    }

    /// The data server's port.
    pub fn data_port(&self) -> u16 {
        self.inner.port
    }

    /// The configuration in use.
    pub fn config(&self) -> &NetworkConfig {
        &self.inner.config
    }

    /// Buffer usage of the whole environment.
    pub fn buffer_stats(&self) -> BufferStats {
        self.inner.global.stats()
    }

    /// Bytes the data server has written to consumers on other TaskExecutors (frames
    /// included): zero unless some consumer is remote.
    pub fn remote_bytes_sent(&self) -> u64 {
        self.inner.manager.remote_bytes_sent.load(Ordering::Relaxed)
    }

    /// Connections the data server refused in the security handshake (no or another cluster
    /// secret, a certificate the cluster CA did not sign or an expired one, plaintext against
    /// TLS, garbage). Each was logged at `warn` and closed before the data protocol.
    pub fn refused_connections(&self) -> u64 {
        self.inner
            .manager
            .connections_refused
            .load(Ordering::Relaxed)
    }

    fn check_running(&self) -> Result<(), NetworkError> {
        if self.inner.shut_down.load(Ordering::Acquire) {
            Err(NetworkError::Shutdown)
        } else {
            Ok(())
        }
    }

    /// Registers a partition with one subpartition per consumer (`local[i]`: consumer `i` runs
    /// in this process). Does not block. Reserves the pool's minimum (`n + 1` buffers) or fails
    /// with [`NetworkError::InsufficientBuffers`].
    pub fn create_result_partition(
        &self,
        id: ResultPartitionId,
        local: Vec<bool>,
    ) -> Result<ResultPartitionWriter, NetworkError> {
        self.check_running()?;
        let c = &self.inner.config;
        let n = local.len();
        if n == 0 {
            return Err(NetworkError::InvalidSubpartition {
                subpartition: 0,
                count: 0,
            });
        }
        let min = n + 1;
        let max = n
            .saturating_mul(c.buffers_per_channel)
            .saturating_add(c.floating_buffers_per_gate);
        let pool = LocalBufferPool::new(
            Arc::clone(&self.inner.global),
            n,
            min,
            max,
            c.max_buffers_per_channel,
        )?;
        let writer = ResultPartitionWriter::register(
            &self.inner.manager,
            id,
            local,
            pool,
            c.local_batch_records,
        )?;
        debug!(partition = %id, subpartitions = n, "result partition registered");
        Ok(writer)
    }

    /// Creates a gate consuming `channels`. Does not block: channels request their
    /// subpartitions in the background (local ones from this environment, remote ones over
    /// TCP), retrying a partition not found with backoff. Claims the remote channels' exclusive
    /// buffers and the gate's floating buffers or fails with
    /// [`NetworkError::InsufficientBuffers`].
    pub fn create_input_gate(
        &self,
        channels: Vec<InputChannelSpec>,
    ) -> Result<InputGate, NetworkError> {
        self.check_running()?;
        let c = &self.inner.config;
        let remote = channels
            .iter()
            .filter(|s| matches!(s.location, ChannelLocation::Remote { .. }))
            .count();
        let claimed = if remote > 0 {
            remote
                .saturating_mul(c.buffers_per_channel)
                .saturating_add(c.floating_buffers_per_gate)
        } else {
            0
        };
        self.inner.global.claim(claimed)?;
        self.inner.global.add_in_use(claimed);
        let setups = channels
            .into_iter()
            .map(|spec| match spec.location {
                ChannelLocation::Local => (
                    spec.partition,
                    spec.subpartition,
                    "local".to_string(),
                    ChannelSetup::Local,
                ),
                ChannelLocation::Remote { address } => {
                    let id = self.inner.next_channel_id.fetch_add(1, Ordering::Relaxed);
                    (
                        spec.partition,
                        spec.subpartition,
                        address.clone(),
                        ChannelSetup::Remote { id, address },
                    )
                }
            })
            .collect();
        let ctx = GateContext {
            global: Arc::clone(&self.inner.global),
            manager: Arc::clone(&self.inner.manager),
            handle: self.inner.handle.clone(),
            segment_size: c.segment_size,
            buffers_per_channel: c.buffers_per_channel,
            floating_buffers_per_gate: c.floating_buffers_per_gate,
            backoff_initial: c.request_backoff_initial,
            backoff_max: c.request_backoff_max,
        };
        Ok(InputGate::start(
            ctx,
            &self.inner.connections,
            setups,
            claimed,
        ))
    }

    /// Whether partition `id` is registered (produced here and not yet fully consumed).
    pub fn has_partition(&self, id: &ResultPartitionId) -> bool {
        self.inner.manager.contains(id)
    }

    /// Releases partition `id` if it is registered (e.g. its job was canceled): queued data is
    /// dropped and consumers fail with `cause`.
    pub fn release_partition(&self, id: &ResultPartitionId, cause: &str) {
        self.inner.manager.release(id, cause);
    }

    /// Stops the data server, every connection and the I/O thread. Idempotent; also done when
    /// the last clone is dropped.
    pub fn shutdown(&self) {
        self.inner.shutdown();
    }
}
