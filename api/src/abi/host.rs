//! The node's side of the ABI: safe wrappers over a library's [`PluginApi`], and the node's
//! callbacks (logging, partition writers) a library calls. Loading the file is the runtime's
//! business; this module starts from the library's entry function.

use std::any::Any;
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::{
    decode_plan_info, encode_build_request, encode_instantiate_request, panic_message, set_error,
    EntryFn, HostApi, HostWriter, InstantiateRequest, PlanInfo, PluginApi, RfBarrier, RfBatch,
    RfBuf, RfSlice, Status, ABI_VERSION, STATUS_ERROR, STATUS_OK, STATUS_PANIC,
};
use crate::codec::decode_exact;
use crate::task::{CheckpointBarrier, PartitionWriter};
use crate::SourceStatus;

/// A failed call into a library.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The library reported an error.
    #[error("{0}")]
    Failed(String),
    /// User code panicked (the panic was caught inside the library).
    #[error("{0}")]
    Panicked(String),
    /// The library answered something this node cannot read.
    #[error("the library's answer is malformed: {0}")]
    Malformed(String),
}

impl From<CallError> for String {
    fn from(e: CallError) -> Self {
        e.to_string()
    }
}

/// The status and error buffer of one call, as a result.
fn outcome(status: Status, err: &mut RfBuf) -> Result<(), CallError> {
    // SAFETY: the library wrote its own buffer (or nothing) into `err`.
    let message = unsafe { err.take_string() };
    match status {
        STATUS_OK => Ok(()),
        STATUS_PANIC => Err(CallError::Panicked(message)),
        STATUS_ERROR => Err(CallError::Failed(message)),
        other => Err(CallError::Malformed(format!(
            "unknown status {other} ({message})"
        ))),
    }
}

fn level_of_host() -> u8 {
    use tracing::level_filters::LevelFilter;
    match LevelFilter::current() {
        LevelFilter::OFF => 0,
        LevelFilter::ERROR => 1,
        LevelFilter::WARN => 2,
        LevelFilter::INFO => 3,
        LevelFilter::DEBUG => 4,
        _ => 5,
    }
}

/// Logs a library's event in the node's log, under the target `rflink::job` with the
/// library's own target as a field.
unsafe extern "C" fn host_log(level: u8, target: RfSlice, message: RfSlice) {
    let _ = catch_unwind(|| {
        // SAFETY: the library passes bytes valid for this call.
        let (target, message) = unsafe { (target.as_bytes(), message.as_bytes()) };
        let target = String::from_utf8_lossy(target);
        let message = String::from_utf8_lossy(message);
        match level {
            1 => tracing::error!(target: "rflink::job", job_target = %target, "{message}"),
            2 => tracing::warn!(target: "rflink::job", job_target = %target, "{message}"),
            3 => tracing::info!(target: "rflink::job", job_target = %target, "{message}"),
            4 => tracing::debug!(target: "rflink::job", job_target = %target, "{message}"),
            _ => tracing::trace!(target: "rflink::job", job_target = %target, "{message}"),
        }
    });
}

/// A library's function table, after its entry point accepted this node.
#[derive(Debug, Clone, Copy)]
pub struct Plugin {
    api: &'static PluginApi,
}

impl Plugin {
    /// Calls a library's entry point and checks what it returns.
    ///
    /// # Safety
    /// `entry` must be the `rflink_plugin_entry` of a library that exports a note with this
    /// node's [`ABI_VERSION`] and [`super::BUILD_FINGERPRINT`], loaded for the rest of the
    /// process's life.
    ///
    /// # Errors
    /// The library's own refusal, or a function table of another ABI version.
    pub unsafe fn from_entry(entry: EntryFn) -> Result<Plugin, CallError> {
        let host = HostApi {
            abi_version: ABI_VERSION,
            max_log_level: level_of_host(),
            log: host_log,
        };
        let mut api: *const PluginApi = std::ptr::null();
        let mut err = RfBuf::EMPTY;
        // SAFETY: the caller guarantees `entry` follows this ABI; the pointers are valid.
        let status = unsafe { entry(&host, &mut api, &mut err) };
        outcome(status, &mut err)?;
        // SAFETY: a library returns a pointer to its static table (never freed: libraries are
        // never unloaded).
        let Some(api) = (unsafe { api.as_ref() }) else {
            return Err(CallError::Malformed("no function table".into()));
        };
        if api.abi_version != ABI_VERSION {
            return Err(CallError::Malformed(format!(
                "a function table of ABI version {}, this node's is {ABI_VERSION}",
                api.abi_version
            )));
        }
        Ok(Plugin { api })
    }

    /// The library's build fingerprint, as its table reports it.
    pub fn fingerprint(&self) -> String {
        // SAFETY: a static string of the library.
        String::from_utf8_lossy(unsafe { self.api.fingerprint.as_bytes() }).into_owned()
    }

    /// The library's jobs: `(name, description)`, sorted by name.
    ///
    /// # Errors
    /// The library's error.
    pub fn jobs(&self) -> Result<Vec<(String, String)>, CallError> {
        let mut out = RfBuf::EMPTY;
        let mut err = RfBuf::EMPTY;
        // SAFETY: valid out-pointers; the table follows this ABI.
        let status = unsafe { (self.api.list_jobs)(&mut out, &mut err) };
        // SAFETY: the library's buffer.
        let bytes = unsafe { out.take() };
        outcome(status, &mut err)?;
        decode_exact(&bytes).map_err(|e| CallError::Malformed(e.to_string()))
    }

    /// Builds job `entry` with `args` in the library and returns its plan.
    ///
    /// # Errors
    /// An unknown job, a bad argument, a panicking build function.
    pub fn build_plan(&self, entry: &str, args: &[String]) -> Result<PlanInfo, CallError> {
        let request = encode_build_request(entry, args);
        let mut out = RfBuf::EMPTY;
        let mut err = RfBuf::EMPTY;
        // SAFETY: `request` outlives the call; valid out-pointers.
        let status = unsafe { (self.api.build_plan)(RfSlice::of(&request), &mut out, &mut err) };
        // SAFETY: the library's buffer.
        let bytes = unsafe { out.take() };
        outcome(status, &mut err)?;
        decode_plan_info(&bytes).map_err(|e| CallError::Malformed(e.to_string()))
    }

    /// Instantiates a vertex subtask of a job in the library, writing into `outputs`.
    ///
    /// # Errors
    /// What `StreamGraph::instantiate` refuses, a fingerprint mismatch, a panic.
    pub fn instantiate(
        &self,
        request: &InstantiateRequest,
        outputs: Vec<Box<dyn PartitionWriter>>,
    ) -> Result<LibraryVertex, CallError> {
        let encoded = encode_instantiate_request(request);
        let mut writers: Vec<HostWriter> = outputs.into_iter().map(host_writer).collect();
        let mut handle: *mut c_void = std::ptr::null_mut();
        let mut is_source = false;
        let mut err = RfBuf::EMPTY;
        // SAFETY: the library takes ownership of every writer (it releases each exactly once);
        // the vector's storage stays ours and is freed below without dropping the moved items.
        let status = unsafe {
            let status = (self.api.instantiate)(
                RfSlice::of(&encoded),
                writers.as_mut_ptr(),
                writers.len(),
                &mut handle,
                &mut is_source,
                &mut err,
            );
            writers.set_len(0);
            status
        };
        outcome(status, &mut err)?;
        if handle.is_null() {
            return Err(CallError::Malformed("no vertex handle".into()));
        }
        // Fixed at instantiation: asked once, so that `uses_time(&self)` needs no call.
        // SAFETY: a live handle of this table.
        let uses_time = unsafe { (self.api.vertex_uses_time)(handle) };
        Ok(LibraryVertex {
            api: self.api,
            handle,
            is_source,
            uses_time,
            task_name: request.context.task_name.clone(),
        })
    }
}

/// A vertex subtask running in a library: the node-side twin of
/// [`VertexInstance`](crate::task::VertexInstance), with the same methods and contract. Drop
/// frees it in the library.
#[derive(Debug)]
pub struct LibraryVertex {
    api: &'static PluginApi,
    handle: *mut c_void,
    is_source: bool,
    uses_time: bool,
    task_name: String,
}

impl LibraryVertex {
    fn call(
        &mut self,
        f: impl FnOnce(&PluginApi, *mut c_void, *mut RfBuf) -> Status,
    ) -> Result<(), String> {
        let mut err = RfBuf::EMPTY;
        let status = f(self.api, self.handle, &mut err);
        outcome(status, &mut err).map_err(|e| match e {
            CallError::Panicked(message) => format!("{}: {message}", self.task_name),
            other => other.to_string(),
        })
    }

    /// True when the chain's head is a source.
    pub fn is_source(&self) -> bool {
        self.is_source
    }

    /// `VertexInstance::open`.
    ///
    /// # Errors
    /// As there, or a panic.
    pub fn open(&mut self) -> Result<(), String> {
        // SAFETY: a live handle of this table.
        self.call(|api, v, err| unsafe { (api.vertex_open)(v, err) })
    }

    /// `VertexInstance::restore`.
    ///
    /// # Errors
    /// As there, or a panic.
    pub fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
        // SAFETY: as above; `snapshot` outlives the call.
        self.call(|api, v, err| unsafe { (api.vertex_restore)(v, RfSlice::of(snapshot), err) })
    }

    /// `VertexInstance::snapshot`.
    ///
    /// # Errors
    /// As there, or a panic.
    pub fn snapshot(&mut self, barrier: CheckpointBarrier) -> Result<Vec<u8>, String> {
        let barrier = RfBarrier {
            id: barrier.id,
            timestamp: barrier.timestamp,
            savepoint: barrier.savepoint,
        };
        let mut out = RfBuf::EMPTY;
        let result =
            // SAFETY: as above.
            self.call(|api, v, err| unsafe { (api.vertex_snapshot)(v, barrier, &mut out, err) });
        // SAFETY: the library's buffer.
        let state = unsafe { out.take() };
        result.map(|()| state)
    }

    /// `VertexInstance::notify_checkpoint_complete`.
    ///
    /// # Errors
    /// As there, or a panic.
    pub fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> Result<(), String> {
        // SAFETY: as above.
        self.call(|api, v, err| unsafe { (api.vertex_notify_complete)(v, checkpoint_id, err) })
    }

    /// `VertexInstance::notify_checkpoint_aborted`.
    pub fn notify_checkpoint_aborted(&mut self, checkpoint_id: u64) {
        // SAFETY: as above.
        unsafe { (self.api.vertex_notify_aborted)(self.handle, checkpoint_id) }
    }

    /// `VertexInstance::poll_source`.
    ///
    /// # Errors
    /// As there, or a panic.
    pub fn poll_source(&mut self, max_records: usize) -> Result<SourceStatus, String> {
        let mut code = 0u8;
        self.call(|api, v, err| {
            // SAFETY: as above.
            unsafe { (api.vertex_poll_source)(v, max_records, &mut code, err) }
        })?;
        match code {
            0 => Ok(SourceStatus::More),
            1 => Ok(SourceStatus::Idle),
            2 => Ok(SourceStatus::Finished),
            other => Err(format!("the library answered source status {other}")),
        }
    }

    /// `VertexInstance::process_record`.
    ///
    /// # Errors
    /// As there, or a panic.
    pub fn process_record(&mut self, input: usize, record: &[u8]) -> Result<(), String> {
        self.call(|api, v, err| {
            // SAFETY: as above; `record` outlives the call.
            unsafe { (api.vertex_process_record)(v, input, RfSlice::of(record), err) }
        })
    }

    /// `VertexInstance::process_batch`, for a batch a vertex of the same library wrote.
    ///
    /// # Errors
    /// A batch not made by a library, or as there.
    pub fn process_batch(
        &mut self,
        input: usize,
        batch: Box<dyn Any + Send>,
    ) -> Result<(), String> {
        let batch = match batch.downcast::<ForeignBatch>() {
            Ok(batch) => batch.into_raw(),
            Err(_) => {
                return Err(format!(
                    "{}: a typed batch from code compiled into the node reached a job library",
                    self.task_name
                ))
            }
        };
        self.call(|api, v, err| {
            // SAFETY: as above; the library owns the batch from here on.
            unsafe { (api.vertex_process_batch)(v, input, batch, err) }
        })
    }

    /// `VertexInstance::end_input`.
    ///
    /// # Errors
    /// As there, or a panic.
    pub fn end_input(&mut self) -> Result<(), String> {
        // SAFETY: as above.
        self.call(|api, v, err| unsafe { (api.vertex_end_input)(v, err) })
    }

    /// `VertexInstance::finish_outputs`.
    ///
    /// # Errors
    /// As there, or a panic.
    pub fn finish_outputs(&mut self) -> Result<(), String> {
        // SAFETY: as above.
        self.call(|api, v, err| unsafe { (api.vertex_finish_outputs)(v, err) })
    }

    /// `VertexInstance::flush`.
    ///
    /// # Errors
    /// As there, or a panic.
    pub fn flush(&mut self) -> Result<(), String> {
        // SAFETY: as above.
        self.call(|api, v, err| unsafe { (api.vertex_flush)(v, err) })
    }

    /// `VertexInstance::process_watermark`.
    ///
    /// # Errors
    /// As there, or a panic (of a timer or window firing).
    pub fn process_watermark(&mut self, watermark: i64) -> Result<(), String> {
        // SAFETY: as above.
        self.call(|api, v, err| unsafe { (api.vertex_process_watermark)(v, watermark, err) })
    }

    /// `VertexInstance::process_watermark_status`.
    ///
    /// # Errors
    /// As there, or a panic.
    pub fn process_watermark_status(&mut self, idle: bool) -> Result<(), String> {
        self.call(|api, v, err| {
            // SAFETY: as above.
            unsafe { (api.vertex_process_watermark_status)(v, idle, err) }
        })
    }

    /// `VertexInstance::advance_processing_time`.
    ///
    /// # Errors
    /// As there, or a panic (of a processing-time timer).
    pub fn advance_processing_time(&mut self, now: i64) -> Result<(), String> {
        self.call(|api, v, err| {
            // SAFETY: as above.
            unsafe { (api.vertex_advance_processing_time)(v, now, err) }
        })
    }

    /// `VertexInstance::next_processing_time`; `None` also for a poisoned vertex (its next
    /// fallible call reports why).
    pub fn next_processing_time(&mut self) -> Option<i64> {
        let mut due = 0i64;
        // SAFETY: as above; `due` is writable.
        unsafe { (self.api.vertex_next_processing_time)(self.handle, &mut due) }.then_some(due)
    }

    /// `VertexInstance::uses_time` (fixed at instantiation).
    pub fn uses_time(&self) -> bool {
        self.uses_time
    }

    /// `VertexInstance::close`.
    pub fn close(&mut self) {
        // SAFETY: as above.
        unsafe { (self.api.vertex_close)(self.handle) }
    }
}

impl Drop for LibraryVertex {
    fn drop(&mut self) {
        let handle = std::mem::replace(&mut self.handle, std::ptr::null_mut());
        // SAFETY: the handle is dropped exactly once, in the library that made it.
        unsafe { (self.api.vertex_drop)(handle) }
    }
}

/// A library's typed batch in the node's local channel. Dropped unconsumed, it is freed by
/// the library's own drop function.
#[derive(Debug)]
pub struct ForeignBatch(RfBatch);

// SAFETY: the batch is a `Box<Box<dyn Any + Send>>` of the library.
unsafe impl Send for ForeignBatch {}

impl ForeignBatch {
    fn into_raw(self) -> RfBatch {
        let this = std::mem::ManuallyDrop::new(self);
        RfBatch {
            ptr: this.0.ptr,
            drop: this.0.drop,
        }
    }
}

impl Drop for ForeignBatch {
    fn drop(&mut self) {
        // SAFETY: the library's batch, freed exactly once by its own function.
        unsafe { (self.0.drop)(self.0.ptr) }
    }
}

// ---- the node's writers, as the library calls them ----

type WriterBox = Box<dyn PartitionWriter>;

/// # Safety
/// `ctx` comes from [`host_writer`] and is not released.
unsafe fn writer<'a>(ctx: *mut c_void) -> &'a mut WriterBox {
    // SAFETY: per the function's contract.
    unsafe { &mut *ctx.cast::<WriterBox>() }
}

/// Runs a writer call, with panics caught and errors written (as this node's buffers).
unsafe fn writer_call(
    ctx: *mut c_void,
    err: *mut RfBuf,
    f: impl FnOnce(&mut WriterBox) -> Result<(), String>,
) -> Status {
    // SAFETY: forwarded from the library, which got `ctx` from `host_writer`.
    let result = catch_unwind(AssertUnwindSafe(|| f(unsafe { writer(ctx) })));
    let message = match result {
        Ok(Ok(())) => return STATUS_OK,
        Ok(Err(message)) => message,
        Err(payload) => format!(
            "the node's partition writer panicked: {}",
            panic_message(payload.as_ref())
        ),
    };
    // SAFETY: the library passes a writable, empty buffer.
    unsafe { set_error(err, message) };
    STATUS_ERROR
}

unsafe extern "C" fn w_num_subpartitions(ctx: *mut c_void) -> usize {
    // SAFETY: see `writer`.
    catch_unwind(AssertUnwindSafe(|| {
        unsafe { writer(ctx) }.num_subpartitions()
    }))
    .unwrap_or(0)
}

unsafe extern "C" fn w_is_local(ctx: *mut c_void, subpartition: usize) -> bool {
    // SAFETY: see `writer`.
    catch_unwind(AssertUnwindSafe(|| {
        unsafe { writer(ctx) }.is_local(subpartition)
    }))
    .unwrap_or(false)
}

unsafe extern "C" fn w_local_batch_records(ctx: *mut c_void) -> usize {
    // SAFETY: see `writer`.
    catch_unwind(AssertUnwindSafe(|| {
        unsafe { writer(ctx) }.local_batch_records()
    }))
    .unwrap_or(1)
}

unsafe extern "C" fn w_write_record(
    ctx: *mut c_void,
    subpartition: usize,
    record: RfSlice,
    err: *mut RfBuf,
) -> Status {
    // SAFETY: see `writer_call`; `record` is valid for the call.
    unsafe {
        writer_call(ctx, err, |w| {
            w.write_record(subpartition, record.as_bytes())
        })
    }
}

unsafe extern "C" fn w_write_batch(
    ctx: *mut c_void,
    subpartition: usize,
    batch: RfBatch,
    records: usize,
    err: *mut RfBuf,
) -> Status {
    let batch = ForeignBatch(batch);
    // SAFETY: see `writer_call`.
    unsafe {
        writer_call(ctx, err, move |w| {
            w.write_batch(subpartition, Box::new(batch), records)
        })
    }
}

unsafe extern "C" fn w_flush(ctx: *mut c_void, err: *mut RfBuf) -> Status {
    // SAFETY: see `writer_call`.
    unsafe { writer_call(ctx, err, |w| w.flush()) }
}

unsafe extern "C" fn w_broadcast_barrier(
    ctx: *mut c_void,
    barrier: RfBarrier,
    err: *mut RfBuf,
) -> Status {
    let barrier = CheckpointBarrier {
        id: barrier.id,
        timestamp: barrier.timestamp,
        savepoint: barrier.savepoint,
    };
    // SAFETY: see `writer_call`.
    unsafe { writer_call(ctx, err, |w| w.broadcast_barrier(barrier)) }
}

unsafe extern "C" fn w_broadcast_watermark(
    ctx: *mut c_void,
    watermark: i64,
    err: *mut RfBuf,
) -> Status {
    // SAFETY: see `writer_call`.
    unsafe { writer_call(ctx, err, |w| w.broadcast_watermark(watermark)) }
}

unsafe extern "C" fn w_broadcast_watermark_status(
    ctx: *mut c_void,
    idle: bool,
    err: *mut RfBuf,
) -> Status {
    // SAFETY: see `writer_call`.
    unsafe { writer_call(ctx, err, |w| w.broadcast_watermark_status(idle)) }
}

unsafe extern "C" fn w_end_of_data(ctx: *mut c_void, err: *mut RfBuf) -> Status {
    // SAFETY: see `writer_call`.
    unsafe { writer_call(ctx, err, |w| w.end_of_data()) }
}

unsafe extern "C" fn w_finish(ctx: *mut c_void, err: *mut RfBuf) -> Status {
    // SAFETY: see `writer_call`.
    unsafe { writer_call(ctx, err, |w| w.finish()) }
}

unsafe extern "C" fn w_release(ctx: *mut c_void) {
    if ctx.is_null() {
        return;
    }
    // SAFETY: made by `host_writer`, released exactly once by the library.
    let writer = unsafe { Box::from_raw(ctx.cast::<WriterBox>()) };
    let _ = catch_unwind(AssertUnwindSafe(move || drop(writer)));
}

/// Wraps one of the node's writers for a library.
fn host_writer(writer: WriterBox) -> HostWriter {
    HostWriter {
        ctx: Box::into_raw(Box::new(writer)).cast::<c_void>(),
        num_subpartitions: w_num_subpartitions,
        is_local: w_is_local,
        local_batch_records: w_local_batch_records,
        write_record: w_write_record,
        write_batch: w_write_batch,
        flush: w_flush,
        broadcast_barrier: w_broadcast_barrier,
        broadcast_watermark: w_broadcast_watermark,
        broadcast_watermark_status: w_broadcast_watermark_status,
        end_of_data: w_end_of_data,
        finish: w_finish,
        release: w_release,
    }
}
