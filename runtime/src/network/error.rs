//! [`NetworkError`], the one error type of the data plane.

use thiserror::Error;

/// What went wrong in the data plane, on either side of a channel.
///
/// Flink names are given where a variant mirrors a Flink exception. Errors are plain data
/// (strings, numbers) so that one failure can be handed to every waiter and returned again by a
/// gate that already failed.
// The fields are named for what they hold; each variant's doc says when it happens.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum NetworkError {
    /// A [`NetworkConfig`](super::NetworkConfig) value is out of range.
    #[error("invalid network configuration: {detail}")]
    InvalidConfig { detail: String },

    /// The global pool cannot reserve the buffers a partition or gate needs. Flink:
    /// `IOException("Insufficient number of network buffers")`.
    #[error(
        "insufficient number of network buffers: required {required}, but only {available} \
         available (total {total}); raise taskmanager.network.numberOfBuffers"
    )]
    InsufficientBuffers {
        required: usize,
        available: usize,
        total: usize,
    },

    /// A blocking write or read was woken by [`Interrupter::interrupt`](super::Interrupter).
    /// Flink: `InterruptedException` of a canceled task.
    #[error("interrupted while waiting for network buffers or input")]
    Interrupted,

    /// The producer's partition was not registered at the producer's ShuffleEnvironment after
    /// every retry. Flink: `PartitionNotFoundException`.
    #[error(
        "result partition {partition} (subpartition {subpartition}) not found at {location} \
         after {attempts} attempts"
    )]
    PartitionNotFound {
        partition: String,
        subpartition: u32,
        location: String,
        attempts: u32,
    },

    /// The producer released its partition (failure or cancellation) before the consumer read
    /// it to its end. Flink: `ProducerFailedException`.
    #[error("the producer released the partition: {cause}")]
    ProducerFailed { cause: String },

    /// The producer refused a partition request (subpartition out of range, already consumed).
    #[error("partition request rejected: {detail}")]
    RequestRejected { detail: String },

    /// The peer broke the data-plane wire protocol (bad preamble or magic, unknown message,
    /// oversized frame, buffer without credit, sequence gap). The connection is closed.
    #[error("data protocol violation by {peer}: {detail}")]
    Protocol { peer: String, detail: String },

    /// The connection to a peer's data server could not be made or broke. Flink:
    /// `RemoteTransportException` / `LocalTransportException`.
    #[error("data connection to {peer} failed: {detail}")]
    Connection { peer: String, detail: String },

    /// A record stream is malformed: a record length above the maximum, or a record cut off at
    /// the end of the partition.
    #[error("corrupt record stream: {detail}")]
    Corrupt { detail: String },

    /// An input channel failed; `source` says why.
    #[error(
        "input channel {channel} (partition {partition}, subpartition {subpartition}, from \
         {peer}) failed: {source}"
    )]
    Channel {
        channel: usize,
        partition: String,
        subpartition: u32,
        peer: String,
        #[source]
        source: Box<NetworkError>,
    },

    /// A subpartition index out of range.
    #[error("subpartition {subpartition} out of range: the partition has {count}")]
    InvalidSubpartition { subpartition: usize, count: usize },

    /// A typed batch was written to a subpartition whose consumer is in another process.
    #[error(
        "subpartition {subpartition} is consumed remotely: typed batches need a local consumer"
    )]
    NotLocal { subpartition: usize },

    /// A record longer than the wire format can describe (4 GiB).
    #[error("record of {len} bytes is too large for the network stack")]
    RecordTooLarge { len: usize },

    /// A write after `finish()` or `release()`.
    #[error("result partition {partition} is already {state}")]
    WriterClosed { partition: String, state: String },

    /// A record or batch written after `end_of_data()` (or a second `EndOfData`): only
    /// checkpoint barriers and `finish()` may follow. Flink: writing after `EndOfData`.
    #[error(
        "result partition {partition} has ended its data (EndOfData was sent): no records may \
         follow, only checkpoint barriers and the end of the partition"
    )]
    DataEnded { partition: String },

    /// A partition id registered twice.
    #[error("result partition {partition} is already registered")]
    DuplicatePartition { partition: String },

    /// The data server could not bind or the I/O thread could not start.
    #[error("cannot start the data plane on {address}: {detail}")]
    Startup { address: String, detail: String },

    /// The ShuffleEnvironment was shut down.
    #[error("the shuffle environment is shut down")]
    Shutdown,
}
