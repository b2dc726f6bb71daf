//! A streaming task's metrics (Flink's `TaskIOMetricGroup`): records and bytes in and out,
//! their rates, back-pressured / idle / busy time, the buffer pools' usage and queues, and each
//! input channel's credit.
//!
//! The task thread updates one counter (`numRecordsIn`); everything else is read, when someone
//! asks, from counters the data plane keeps anyway (its partition writers and input gate), so
//! the record path pays one relaxed atomic add per buffer or batch.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::{Counter, MetricGroup};
use crate::network::{GateStatsHandle, PartitionStatsHandle};

/// The names of a task's metrics that the JobMaster sums per vertex for `/jobs/{id}` and
/// colours the job graph by (the rest are listed by the metrics endpoints too).
pub mod names {
    /// Records the task read from its inputs.
    pub const NUM_RECORDS_IN: &str = "numRecordsIn";
    /// Records it wrote to its outputs.
    pub const NUM_RECORDS_OUT: &str = "numRecordsOut";
    /// Bytes it read from remote inputs.
    pub const NUM_BYTES_IN: &str = "numBytesIn";
    /// Bytes it serialized for remote outputs.
    pub const NUM_BYTES_OUT: &str = "numBytesOut";
    /// Milliseconds blocked on output buffers, total.
    pub const ACCUMULATED_BACKPRESSURED: &str = "accumulatedBackpressuredTimeMs";
    /// Milliseconds waiting for input, total.
    pub const ACCUMULATED_IDLE: &str = "accumulatedIdleTimeMs";
    /// Milliseconds neither, total.
    pub const ACCUMULATED_BUSY: &str = "accumulatedBusyTimeMs";
    /// Milliseconds per second blocked on output buffers.
    pub const BACKPRESSURED_PER_SECOND: &str = "backPressuredTimeMsPerSecond";
    /// Milliseconds per second waiting for input.
    pub const IDLE_PER_SECOND: &str = "idleTimeMsPerSecond";
    /// Milliseconds per second working.
    pub const BUSY_PER_SECOND: &str = "busyTimeMsPerSecond";
    /// The last watermark the task's operators got (`i64::MIN`: none yet).
    pub const CURRENT_INPUT_WATERMARK: &str = "currentInputWatermark";
    /// The last watermark the task sent downstream.
    pub const CURRENT_OUTPUT_WATERMARK: &str = "currentOutputWatermark";
}

/// A task's last input watermark (the valve's output) and the last watermark it broadcast
/// (Flink's `currentInputWatermark` / `currentOutputWatermark`): `i64::MIN`, Flink's "no
/// watermark", until one came. Written by the task thread, read by the metrics.
#[derive(Debug, Clone)]
pub struct TaskWatermarks {
    /// The watermark the task's operators got last.
    pub input: Arc<AtomicI64>,
    /// The watermark the task sent downstream last.
    pub output: Arc<AtomicI64>,
}

impl Default for TaskWatermarks {
    fn default() -> Self {
        TaskWatermarks {
            input: Arc::new(AtomicI64::new(i64::MIN)),
            output: Arc::new(AtomicI64::new(i64::MIN)),
        }
    }
}

/// What the task thread updates: its input record count and its watermarks.
#[derive(Debug, Clone, Default)]
pub struct TaskIo {
    /// `numRecordsIn`.
    pub records_in: Counter,
    /// `currentInputWatermark` and `currentOutputWatermark`.
    pub watermarks: TaskWatermarks,
}

fn sum_outputs(outputs: &[PartitionStatsHandle], f: impl Fn(&PartitionStatsHandle) -> f64) -> f64 {
    outputs.iter().map(f).sum()
}

/// Registers a streaming task's metrics in `group` and returns what the task thread updates.
pub fn register_task_io(
    group: &MetricGroup,
    outputs: Vec<PartitionStatsHandle>,
    input: Option<GateStatsHandle>,
) -> TaskIo {
    use names::*;
    let started = Instant::now();
    let records_in = group.counter(NUM_RECORDS_IN);
    let watermarks = TaskWatermarks::default();
    let w = Arc::clone(&watermarks.input);
    group.gauge_fn(CURRENT_INPUT_WATERMARK, move || {
        w.load(Ordering::Relaxed) as f64
    });
    let w = Arc::clone(&watermarks.output);
    group.gauge_fn(CURRENT_OUTPUT_WATERMARK, move || {
        w.load(Ordering::Relaxed) as f64
    });
    let outs = Arc::new(outputs);

    let o = outs.clone();
    let records_out = move || sum_outputs(&o, |h| h.get().records_written as f64);
    let o = outs.clone();
    let bytes_out = move || sum_outputs(&o, |h| h.get().bytes_written as f64);
    let i = input.clone();
    let bytes_in = move || i.as_ref().map_or(0.0, |g| g.get().bytes_received as f64);
    let o = outs.clone();
    let backpressured_ms = move || sum_outputs(&o, |h| h.get().blocked_time.as_secs_f64() * 1000.0);
    let i = input.clone();
    let idle_ms = move || {
        i.as_ref()
            .map_or(0.0, |g| g.get().wait_time.as_secs_f64() * 1000.0)
    };
    let (b, d) = (backpressured_ms.clone(), idle_ms.clone());
    let busy_ms = move || (started.elapsed().as_secs_f64() * 1000.0 - b() - d()).max(0.0);

    group.gauge_fn(NUM_RECORDS_OUT, records_out.clone());
    group.gauge_fn(NUM_BYTES_IN, bytes_in.clone());
    group.gauge_fn(NUM_BYTES_OUT, bytes_out.clone());
    let r = records_in.clone();
    group.rate("numRecordsInPerSecond", move || r.get() as f64);
    group.rate("numRecordsOutPerSecond", records_out);
    group.rate("numBytesInPerSecond", bytes_in);
    group.rate("numBytesOutPerSecond", bytes_out);

    group.gauge_fn(ACCUMULATED_BACKPRESSURED, backpressured_ms.clone());
    group.gauge_fn(ACCUMULATED_IDLE, idle_ms.clone());
    group.gauge_fn(ACCUMULATED_BUSY, busy_ms.clone());
    group.rate(BACKPRESSURED_PER_SECOND, backpressured_ms);
    group.rate(IDLE_PER_SECOND, idle_ms);
    group.rate(BUSY_PER_SECOND, busy_ms);

    let o = outs.clone();
    group.gauge_fn("isBackPressured", move || {
        f64::from(u8::from(o.iter().any(|h| h.get().blocked)))
    });
    let o = outs.clone();
    group.gauge_fn("buffers.outPoolUsage", move || {
        o.iter().map(|h| h.pool_usage()).fold(0.0, f64::max)
    });
    let o = outs;
    group.gauge_fn("buffers.outputQueueLength", move || {
        o.iter().map(|h| h.queue_length() as f64).sum()
    });
    let i = input.clone();
    group.gauge_fn("buffers.inPoolUsage", move || {
        i.as_ref().map_or(0.0, |g| g.pool_usage())
    });
    let i = input.clone();
    group.gauge_fn("buffers.inputQueueLength", move || {
        i.as_ref().map_or(0.0, |g| g.queue_length() as f64)
    });
    TaskIo {
        records_in,
        watermarks,
    }
}

/// Registers one group per input channel of `input` (variable `channel`), with its credit,
/// the sender's backlog, queued buffers and buffers held. Returns the groups; they live as long
/// as the caller keeps them.
pub fn register_channels(task: &MetricGroup, input: &GateStatsHandle) -> Vec<MetricGroup> {
    input
        .channels()
        .into_iter()
        .map(|c| {
            let group = task.child(
                "",
                &[
                    ("channel", c.channel.to_string()),
                    (
                        "channel_kind",
                        if c.remote { "remote" } else { "local" }.into(),
                    ),
                ],
            );
            let index = c.channel;
            let field = |f: fn(&crate::network::ChannelMetrics) -> usize| {
                let h = input.clone();
                move || h.channels().get(index).map_or(0.0, |c| f(c) as f64)
            };
            group.gauge_fn("Shuffle.Netty.Input.channel.credit", field(|c| c.credit));
            group.gauge_fn("Shuffle.Netty.Input.channel.backlog", field(|c| c.backlog));
            group.gauge_fn("Shuffle.Netty.Input.channel.queued", field(|c| c.queued));
            group.gauge_fn("Shuffle.Netty.Input.channel.buffers", field(|c| c.buffers));
            group
        })
        .collect()
}
