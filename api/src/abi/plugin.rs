//! The library's side of the ABI: what [`export_jobs!`](crate::export_jobs) wires up. Every
//! function here is an `extern "C"` export that catches panics and reports errors as
//! [`RfBuf`]s allocated (and later freed) by the library.

use std::any::Any;
use std::cell::Cell;
use std::ffi::c_void;
use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

use super::{
    decode_build_request, decode_instantiate_request, encode_plan_info, level_number,
    panic_message, set_error, HostApi, HostWriter, PlanInfo, PluginApi, RfBarrier, RfBatch, RfBuf,
    RfSlice, Status, ABI_VERSION, BUILD_FINGERPRINT, STATUS_ERROR, STATUS_OK, STATUS_PANIC,
};
use crate::codec::encode_to_vec;
use crate::task::{CheckpointBarrier, PartitionWriter, VertexInstance};
use crate::{JobArgs, JobRegistry, SourceStatus};

/// The library's jobs, set once by the entry point.
static REGISTRY: OnceLock<JobRegistry> = OnceLock::new();

static PLUGIN_API: PluginApi = PluginApi {
    abi_version: ABI_VERSION,
    fingerprint: RfSlice {
        ptr: BUILD_FINGERPRINT.as_ptr(),
        len: BUILD_FINGERPRINT.len(),
    },
    list_jobs,
    build_plan,
    instantiate,
    vertex_open,
    vertex_restore,
    vertex_snapshot,
    vertex_notify_complete,
    vertex_notify_aborted,
    vertex_poll_source,
    vertex_process_record,
    vertex_process_batch,
    vertex_end_input,
    vertex_finish_outputs,
    vertex_flush,
    vertex_process_watermark,
    vertex_process_watermark_status,
    vertex_advance_processing_time,
    vertex_next_processing_time,
    vertex_uses_time,
    vertex_close,
    vertex_drop,
};

/// The body of a library's `rflink_plugin_entry`: checks the node's ABI version, routes the
/// library's logging and panic messages to the node, builds the registry once, and returns
/// the function table.
///
/// # Safety
/// `host` is null or points to a valid [`HostApi`]; `api` and `err` are null or writable.
pub unsafe fn entry(
    host: *const HostApi,
    api: *mut *const PluginApi,
    err: *mut RfBuf,
    registry: fn() -> JobRegistry,
) -> Status {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the caller guarantees `host` is null or valid.
        let Some(host) = (unsafe { host.as_ref() }) else {
            return Err("no host API given".to_string());
        };
        if host.abi_version != ABI_VERSION {
            return Err(format!(
                "the node speaks rflink ABI version {}, this library version {ABI_VERSION}",
                host.abi_version
            ));
        }
        install_logging(*host);
        let jobs = REGISTRY.get_or_init(registry);
        if jobs.names().is_empty() {
            return Err("the library's registry has no jobs".to_string());
        }
        Ok(())
    }));
    let result = match outcome {
        Ok(result) => result,
        Err(payload) => Err(format!(
            "the library's job registry panicked: {}",
            panic_message(payload.as_ref())
        )),
    };
    match result {
        Ok(()) => {
            if !api.is_null() {
                // SAFETY: the caller guarantees `api` is writable.
                unsafe { api.write(&PLUGIN_API) };
            }
            STATUS_OK
        }
        Err(message) => {
            // SAFETY: the caller guarantees `err` is null or writable.
            unsafe { set_error(err, message) };
            STATUS_ERROR
        }
    }
}

/// Runs `f` with panics caught; errors and panics go to `err`.
unsafe fn guarded(err: *mut RfBuf, f: impl FnOnce() -> Result<(), String>) -> Status {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => STATUS_OK,
        Ok(Err(message)) => {
            // SAFETY: forwarded from the export's caller.
            unsafe { set_error(err, message) };
            STATUS_ERROR
        }
        Err(payload) => {
            // SAFETY: forwarded from the export's caller.
            unsafe {
                set_error(
                    err,
                    format!("user code panicked: {}", panic_message(payload.as_ref())),
                )
            };
            STATUS_PANIC
        }
    }
}

fn registry() -> Result<&'static JobRegistry, String> {
    REGISTRY
        .get()
        .ok_or_else(|| "the library was not initialized through its entry point".to_string())
}

unsafe extern "C" fn list_jobs(out: *mut RfBuf, err: *mut RfBuf) -> Status {
    // SAFETY: the node passes writable `out` and `err`.
    unsafe {
        guarded(err, || {
            let jobs: Vec<(String, String)> = registry()?
                .entries()
                .map(|e| (e.name.clone(), e.description.clone()))
                .collect();
            if !out.is_null() {
                out.write(RfBuf::from_vec(encode_to_vec(&jobs)));
            }
            Ok(())
        })
    }
}

unsafe extern "C" fn build_plan(request: RfSlice, out: *mut RfBuf, err: *mut RfBuf) -> Status {
    // SAFETY: the node passes a valid request and writable `out` and `err`.
    unsafe {
        guarded(err, || {
            let (entry, args) = decode_build_request(request.as_bytes())
                .map_err(|e| format!("malformed build request: {e}"))?;
            let graph = registry()?
                .build(&entry, &JobArgs::from_args(args))
                .map_err(|e| e.to_string())?;
            let info = PlanInfo {
                plan: graph.plan(),
                job_config: graph.job_config().clone(),
                batch_emission: graph.batch_emission(),
            };
            if !out.is_null() {
                out.write(RfBuf::from_vec(encode_plan_info(&info)));
            }
            Ok(())
        })
    }
}

/// A node's writer, as the library's chain sees it.
struct ForeignWriter(HostWriter);

// SAFETY: the node's writer is `Send` (it is a `Box<dyn PartitionWriter>`, which requires it)
// and is used from one thread at a time.
unsafe impl Send for ForeignWriter {}

impl ForeignWriter {
    fn call(&mut self, f: impl FnOnce(&HostWriter, *mut RfBuf) -> Status) -> Result<(), String> {
        let mut err = RfBuf::EMPTY;
        let status = f(&self.0, &mut err);
        // SAFETY: the node wrote its own buffer (or nothing) into `err`.
        let message = unsafe { err.take_string() };
        if status == STATUS_OK {
            Ok(())
        } else {
            Err(message)
        }
    }
}

impl PartitionWriter for ForeignWriter {
    fn num_subpartitions(&self) -> usize {
        // SAFETY: `ctx` is the node's writer, alive until `release`.
        unsafe { (self.0.num_subpartitions)(self.0.ctx) }
    }

    fn is_local(&self, subpartition: usize) -> bool {
        // SAFETY: as above.
        unsafe { (self.0.is_local)(self.0.ctx, subpartition) }
    }

    fn local_batch_records(&self) -> usize {
        // SAFETY: as above.
        unsafe { (self.0.local_batch_records)(self.0.ctx) }
    }

    fn write_record(&mut self, subpartition: usize, record: &[u8]) -> Result<(), String> {
        // SAFETY: as above; `record` outlives the call.
        self.call(|w, err| unsafe {
            (w.write_record)(w.ctx, subpartition, RfSlice::of(record), err)
        })
    }

    fn write_batch(
        &mut self,
        subpartition: usize,
        batch: Box<dyn Any + Send>,
        records: usize,
    ) -> Result<(), String> {
        let batch = RfBatch {
            ptr: Box::into_raw(Box::new(batch)).cast::<c_void>(),
            drop: drop_batch,
        };
        // SAFETY: as above; the node owns the batch from here on.
        self.call(|w, err| unsafe { (w.write_batch)(w.ctx, subpartition, batch, records, err) })
    }

    fn flush(&mut self) -> Result<(), String> {
        // SAFETY: as above.
        self.call(|w, err| unsafe { (w.flush)(w.ctx, err) })
    }

    fn broadcast_barrier(&mut self, barrier: CheckpointBarrier) -> Result<(), String> {
        let barrier = RfBarrier {
            id: barrier.id,
            timestamp: barrier.timestamp,
            savepoint: barrier.savepoint,
        };
        // SAFETY: as above.
        self.call(|w, err| unsafe { (w.broadcast_barrier)(w.ctx, barrier, err) })
    }

    fn broadcast_watermark(&mut self, watermark: i64) -> Result<(), String> {
        // SAFETY: as above.
        self.call(|w, err| unsafe { (w.broadcast_watermark)(w.ctx, watermark, err) })
    }

    fn broadcast_watermark_status(&mut self, idle: bool) -> Result<(), String> {
        // SAFETY: as above.
        self.call(|w, err| unsafe { (w.broadcast_watermark_status)(w.ctx, idle, err) })
    }

    fn end_of_data(&mut self) -> Result<(), String> {
        // SAFETY: as above.
        self.call(|w, err| unsafe { (w.end_of_data)(w.ctx, err) })
    }

    fn finish(&mut self) -> Result<(), String> {
        // SAFETY: as above.
        self.call(|w, err| unsafe { (w.finish)(w.ctx, err) })
    }
}

impl Drop for ForeignWriter {
    fn drop(&mut self) {
        // SAFETY: released exactly once, here.
        unsafe { (self.0.release)(self.0.ctx) }
    }
}

unsafe extern "C" fn drop_batch(batch: *mut c_void) {
    if batch.is_null() {
        return;
    }
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: made by `ForeignWriter::write_batch` of this library, dropped once.
        drop(unsafe { Box::from_raw(batch.cast::<Box<dyn Any + Send>>()) });
    }));
}

/// A vertex subtask living in the library.
struct PluginVertex {
    instance: VertexInstance,
    /// Set when user code panicked: the chain's state is unknown, later calls fail.
    poisoned: Option<String>,
}

unsafe extern "C" fn instantiate(
    request: RfSlice,
    writers: *mut HostWriter,
    count: usize,
    out: *mut *mut c_void,
    is_source: *mut bool,
    err: *mut RfBuf,
) -> Status {
    // Take ownership of every writer first: from here on each is released exactly once, by
    // its `ForeignWriter`, whatever happens next.
    let mut outputs: Vec<Box<dyn PartitionWriter>> = Vec::with_capacity(count);
    for i in 0..count {
        // SAFETY: the node passes `count` initialized writers and gives up ownership.
        let writer = unsafe { writers.add(i).read() };
        outputs.push(Box::new(ForeignWriter(writer)));
    }
    // SAFETY: the node passes a valid request and writable `out`, `is_source` and `err`.
    unsafe {
        guarded(err, move || {
            let request = decode_instantiate_request(request.as_bytes())
                .map_err(|e| format!("malformed instantiate request: {e}"))?;
            let graph = registry()?
                .build(&request.entry, &JobArgs::from_args(request.args.clone()))
                .map_err(|e| format!("cannot build job {:?}: {e}", request.entry))?;
            if graph.fingerprint() != request.fingerprint {
                return Err(format!(
                    "job {:?} built a different graph in this library (fingerprint {}) than on \
                     the client ({}): the build function is not deterministic",
                    request.entry,
                    graph.fingerprint(),
                    request.fingerprint
                ));
            }
            let instance = graph
                .instantiate(request.vertex, request.context, outputs)
                .map_err(|e| e.to_string())?;
            let source = instance.is_source();
            let vertex = Box::new(PluginVertex {
                instance,
                poisoned: None,
            });
            if out.is_null() {
                return Err("no place for the vertex handle".to_string());
            }
            out.write(Box::into_raw(vertex).cast::<c_void>());
            if !is_source.is_null() {
                is_source.write(source);
            }
            Ok(())
        })
    }
}

/// Runs `f` on the vertex: refused when poisoned, poisons it when user code panics.
unsafe fn with_vertex(
    vertex: *mut c_void,
    err: *mut RfBuf,
    f: impl FnOnce(&mut VertexInstance) -> Result<(), String>,
) -> Status {
    // SAFETY: the node passes a handle from `instantiate`, used by one thread at a time.
    let Some(vertex) = (unsafe { vertex.cast::<PluginVertex>().as_mut() }) else {
        // SAFETY: `err` is null or writable.
        unsafe { set_error(err, "no vertex (null handle)") };
        return STATUS_ERROR;
    };
    if let Some(why) = &vertex.poisoned {
        // SAFETY: as above.
        unsafe {
            set_error(
                err,
                format!("the operator chain is unusable after a panic in user code: {why}"),
            )
        };
        return STATUS_ERROR;
    }
    match catch_unwind(AssertUnwindSafe(|| f(&mut vertex.instance))) {
        Ok(Ok(())) => STATUS_OK,
        Ok(Err(message)) => {
            // SAFETY: as above.
            unsafe { set_error(err, message) };
            STATUS_ERROR
        }
        Err(payload) => {
            let message = panic_message(payload.as_ref());
            vertex.poisoned = Some(message.clone());
            // SAFETY: as above.
            unsafe { set_error(err, format!("user code panicked: {message}")) };
            STATUS_PANIC
        }
    }
}

unsafe extern "C" fn vertex_open(vertex: *mut c_void, err: *mut RfBuf) -> Status {
    // SAFETY: forwarded from the node.
    unsafe { with_vertex(vertex, err, VertexInstance::open) }
}

unsafe extern "C" fn vertex_restore(
    vertex: *mut c_void,
    state: RfSlice,
    err: *mut RfBuf,
) -> Status {
    // SAFETY: forwarded from the node; `state` outlives the call.
    unsafe { with_vertex(vertex, err, |v| v.restore(state.as_bytes())) }
}

unsafe extern "C" fn vertex_snapshot(
    vertex: *mut c_void,
    barrier: RfBarrier,
    out: *mut RfBuf,
    err: *mut RfBuf,
) -> Status {
    let barrier = CheckpointBarrier {
        id: barrier.id,
        timestamp: barrier.timestamp,
        savepoint: barrier.savepoint,
    };
    // SAFETY: forwarded from the node.
    unsafe {
        with_vertex(vertex, err, |v| {
            let state = v.snapshot(barrier)?;
            if !out.is_null() {
                out.write(RfBuf::from_vec(state));
            }
            Ok(())
        })
    }
}

unsafe extern "C" fn vertex_notify_complete(
    vertex: *mut c_void,
    checkpoint_id: u64,
    err: *mut RfBuf,
) -> Status {
    // SAFETY: forwarded from the node.
    unsafe { with_vertex(vertex, err, |v| v.notify_checkpoint_complete(checkpoint_id)) }
}

unsafe extern "C" fn vertex_notify_aborted(vertex: *mut c_void, checkpoint_id: u64) {
    let mut err = RfBuf::EMPTY;
    // SAFETY: forwarded from the node; `err` is ours.
    unsafe {
        with_vertex(vertex, &mut err, |v| {
            v.notify_checkpoint_aborted(checkpoint_id);
            Ok(())
        });
        drop(err.take());
    }
}

unsafe extern "C" fn vertex_poll_source(
    vertex: *mut c_void,
    max_records: usize,
    status: *mut u8,
    err: *mut RfBuf,
) -> Status {
    // SAFETY: forwarded from the node.
    unsafe {
        with_vertex(vertex, err, |v| {
            let code = match v.poll_source(max_records)? {
                SourceStatus::More => 0,
                SourceStatus::Idle => 1,
                SourceStatus::Finished => 2,
            };
            if !status.is_null() {
                status.write(code);
            }
            Ok(())
        })
    }
}

unsafe extern "C" fn vertex_process_record(
    vertex: *mut c_void,
    input: usize,
    record: RfSlice,
    err: *mut RfBuf,
) -> Status {
    // SAFETY: forwarded from the node; `record` outlives the call.
    unsafe { with_vertex(vertex, err, |v| v.process_record(input, record.as_bytes())) }
}

unsafe extern "C" fn vertex_process_batch(
    vertex: *mut c_void,
    input: usize,
    batch: RfBatch,
    err: *mut RfBuf,
) -> Status {
    if batch.ptr.is_null() {
        // SAFETY: `err` is null or writable.
        unsafe { set_error(err, "a null typed batch") };
        return STATUS_ERROR;
    }
    let ours: unsafe extern "C" fn(*mut c_void) = drop_batch;
    if batch.drop as usize != ours as usize {
        // Not made by this library: give it back to its maker, refuse it.
        // SAFETY: the batch's own drop function frees it.
        unsafe {
            (batch.drop)(batch.ptr);
            set_error(err, "a typed batch made by another library");
        }
        return STATUS_ERROR;
    }
    // SAFETY: made by `ForeignWriter::write_batch` of this library; ownership passes here.
    let records = unsafe { Box::from_raw(batch.ptr.cast::<Box<dyn Any + Send>>()) };
    // SAFETY: forwarded from the node.
    unsafe { with_vertex(vertex, err, move |v| v.process_batch(input, *records)) }
}

unsafe extern "C" fn vertex_end_input(vertex: *mut c_void, err: *mut RfBuf) -> Status {
    // SAFETY: forwarded from the node.
    unsafe { with_vertex(vertex, err, VertexInstance::end_input) }
}

unsafe extern "C" fn vertex_finish_outputs(vertex: *mut c_void, err: *mut RfBuf) -> Status {
    // SAFETY: forwarded from the node.
    unsafe { with_vertex(vertex, err, VertexInstance::finish_outputs) }
}

unsafe extern "C" fn vertex_flush(vertex: *mut c_void, err: *mut RfBuf) -> Status {
    // SAFETY: forwarded from the node.
    unsafe { with_vertex(vertex, err, VertexInstance::flush) }
}

unsafe extern "C" fn vertex_process_watermark(
    vertex: *mut c_void,
    watermark: i64,
    err: *mut RfBuf,
) -> Status {
    // SAFETY: forwarded from the node.
    unsafe { with_vertex(vertex, err, |v| v.process_watermark(watermark)) }
}

unsafe extern "C" fn vertex_process_watermark_status(
    vertex: *mut c_void,
    idle: bool,
    err: *mut RfBuf,
) -> Status {
    // SAFETY: forwarded from the node.
    unsafe { with_vertex(vertex, err, |v| v.process_watermark_status(idle)) }
}

unsafe extern "C" fn vertex_advance_processing_time(
    vertex: *mut c_void,
    now: i64,
    err: *mut RfBuf,
) -> Status {
    // SAFETY: forwarded from the node.
    unsafe { with_vertex(vertex, err, |v| v.advance_processing_time(now)) }
}

unsafe extern "C" fn vertex_next_processing_time(vertex: *mut c_void, out: *mut i64) -> bool {
    // SAFETY: the node passes a handle from `instantiate`, used by one thread at a time.
    let Some(vertex) = (unsafe { vertex.cast::<PluginVertex>().as_mut() }) else {
        return false;
    };
    if vertex.poisoned.is_some() {
        return false;
    }
    match catch_unwind(AssertUnwindSafe(|| vertex.instance.next_processing_time())) {
        Ok(Some(time)) => {
            if out.is_null() {
                return false;
            }
            // SAFETY: the node passes a writable `out`.
            unsafe { out.write(time) };
            true
        }
        Ok(None) => false,
        Err(payload) => {
            // No error channel here: the vertex is poisoned and the next call that can fail
            // reports the panic.
            vertex.poisoned = Some(panic_message(payload.as_ref()));
            false
        }
    }
}

unsafe extern "C" fn vertex_uses_time(vertex: *mut c_void) -> bool {
    // SAFETY: the node passes a handle from `instantiate`.
    let Some(vertex) = (unsafe { vertex.cast::<PluginVertex>().as_ref() }) else {
        return false;
    };
    // A field read, guarded anyway: nothing unwinds across.
    catch_unwind(AssertUnwindSafe(|| vertex.instance.uses_time())).unwrap_or(false)
}

unsafe extern "C" fn vertex_close(vertex: *mut c_void) {
    // SAFETY: the node passes a handle from `instantiate`.
    if let Some(vertex) = unsafe { vertex.cast::<PluginVertex>().as_mut() } {
        // Closing is allowed after a panic: it releases files and buffers.
        let _ = catch_unwind(AssertUnwindSafe(|| vertex.instance.close()));
    }
}

unsafe extern "C" fn vertex_drop(vertex: *mut c_void) {
    if vertex.is_null() {
        return;
    }
    // SAFETY: a handle from `instantiate`, dropped exactly once by the node.
    let vertex = unsafe { Box::from_raw(vertex.cast::<PluginVertex>()) };
    let _ = catch_unwind(AssertUnwindSafe(move || drop(vertex)));
}

// ---- logging ----

thread_local! {
    /// Set while an event is being handed to the node: an event the node's logging raises in
    /// turn (only possible when node and library are one binary, as in tests) is dropped
    /// instead of looping.
    static FORWARDING: Cell<bool> = const { Cell::new(false) };
}

/// A `tracing` subscriber that hands every event to the node. Spans are not forwarded (their
/// fields are lost; events inside them still arrive).
struct HostLog {
    host: HostApi,
}

impl HostLog {
    fn forward(&self, level: u8, target: &str, message: &str) {
        if FORWARDING.with(|f| f.replace(true)) {
            return;
        }
        // SAFETY: the node's log function takes borrowed bytes for the call's duration.
        unsafe {
            (self.host.log)(
                level,
                RfSlice::of(target.as_bytes()),
                RfSlice::of(message.as_bytes()),
            )
        };
        FORWARDING.with(|f| f.set(false));
    }
}

#[derive(Default)]
struct EventText {
    message: String,
    fields: String,
}

impl tracing::field::Visit for EventText {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}

impl tracing::Subscriber for HostLog {
    fn register_callsite(
        &self,
        metadata: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        if self.enabled(metadata) {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        level_number(metadata.level()) <= self.host.max_log_level
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(match self.host.max_log_level {
            0 => tracing::level_filters::LevelFilter::OFF,
            1 => tracing::level_filters::LevelFilter::ERROR,
            2 => tracing::level_filters::LevelFilter::WARN,
            3 => tracing::level_filters::LevelFilter::INFO,
            4 => tracing::level_filters::LevelFilter::DEBUG,
            _ => tracing::level_filters::LevelFilter::TRACE,
        })
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let mut text = EventText::default();
        event.record(&mut text);
        text.message.push_str(&text.fields);
        let metadata = event.metadata();
        self.forward(
            level_number(metadata.level()),
            metadata.target(),
            &text.message,
        );
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

/// Routes this library's `tracing` events and panic messages to the node (once).
fn install_logging(host: HostApi) {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        // Fails if the library set its own subscriber already; then that one stays.
        let _ = tracing::subscriber::set_global_default(HostLog { host });
        // The earlier hook (std's: the usual message on stderr) still runs after ours.
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let location = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            let message = format!(
                "user code panicked{location}: {}",
                panic_message(info.payload())
            );
            HostLog { host }.forward(1, "rflink::job::panic", &message);
            previous(info);
        }));
    });
}
